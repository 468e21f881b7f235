"""Governance: what learners may never change, review mode, and (later) undo by cause.

    from crystallise.governance import check_protected
    problems = check_protected(changeset, read=repo.read)   # [] when the change set is allowed
"""

from crystallise.governance.protect import HUMAN_LEARNERS, Actor, Violation, by_person, check_protected
from crystallise.governance.review import PendingReview, ReviewRule, approve, load_rules, reject, requires_review

__all__ = [
    "HUMAN_LEARNERS",
    "Actor",
    "PendingReview",
    "ReviewRule",
    "Violation",
    "approve",
    "by_person",
    "check_protected",
    "load_rules",
    "reject",
    "requires_review",
]
