"""Chaos Toolkit rollbacks: cancel what the run injected, by label (or by id).

Rollbacks are actions in Chaos Toolkit's model; these are the same functions as in
chaosfaultline.actions, offered here so an experiment's rollbacks read as such.
"""

from chaosfaultline.actions import cancel, cancel_by_label

__all__ = ["cancel", "cancel_by_label"]
