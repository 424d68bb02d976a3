//! Placeholder: filled by the cluster work (issue 6).
