//! Placeholder: the Raft-replicated Datastore (issue 6).
