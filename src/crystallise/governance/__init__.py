"""Governance: what learners may never change, and (later) review and undo by cause.

    from crystallise.governance import check_protected
    problems = check_protected(changeset, read=repo.read)   # [] when the change set is allowed
"""

from crystallise.governance.protect import HUMAN_LEARNERS, Violation, check_protected

__all__ = ["HUMAN_LEARNERS", "Violation", "check_protected"]
