"""Who may act on a dialog: one rule for every door that writes to one (REST and WebSocket).

- the service token (internal workers): any dialog;
- a user: the dialog's owner or an admin;
- a visitor (site token or widget variant): the dialog of that owner and that guest, and of the
  token's assistant when the token names one (spec §6.3 "required" checks).
Anything else is "not found" (DESIGN.md §8: 404, never 403, so ids do not leak).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from server.errors import not_found
from server.http.guards import Caller, SiteCaller
from server.store import dialog_queries as queries
from server.store.dialog_queries import DialogRecord
from server.store.users import UserRecord

DIALOG_NOT_FOUND = "Dialog not found"


def visitor_owns(dialog: DialogRecord, site: SiteCaller) -> bool:
    if dialog.user_id != site.owner_id or dialog.guest_id != site.guest_id:
        return False
    return site.assistant_id is None or dialog.assistant_id == site.assistant_id


def user_may_act(dialog: DialogRecord, user: UserRecord) -> bool:
    return user.is_admin or dialog.user_id == user.id


def dialog_for(session: Session, caller: Caller, dialog_id: int) -> DialogRecord:
    dialog = queries.get_dialog(session, dialog_id)
    if dialog is None:
        raise not_found(DIALOG_NOT_FOUND)
    if caller.service:
        return dialog
    if caller.site is not None and visitor_owns(dialog, caller.site):
        return dialog
    if caller.user is not None and user_may_act(dialog, caller.user):
        return dialog
    raise not_found(DIALOG_NOT_FOUND)
