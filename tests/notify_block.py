"""A notification block for tests: appends each message to a file."""

from __future__ import annotations

import json
from typing import ClassVar

from prefect.blocks.abstract import NotificationBlock


class FileNotification(NotificationBlock):
    _block_type_name: ClassVar[str] = "ML Test File Notification"
    _block_type_slug: ClassVar[str] = "ml-test-file-notification"

    path: str

    def notify(self, body: str, subject: str | None = None) -> None:
        with open(self.path, "a") as out:
            out.write(json.dumps({"subject": subject, "body": body}) + "\n")
