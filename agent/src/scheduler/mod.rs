//! Placeholder: the scheduler (issue 6).
