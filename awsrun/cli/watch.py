"""Verbs added by later work; registered here so the group stays stable."""
from __future__ import annotations

COMMANDS: list = []
