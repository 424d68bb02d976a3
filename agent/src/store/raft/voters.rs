//! Which nodes vote: a pure policy the cluster layer applies with
//! [`super::RaftStore::change_voters`] when gossip reports a change.
//!
//! Rules, given the healthy nodes in join order and the current voters:
//! - the target is 3 voters, 5 once 7 or more nodes are healthy;
//! - healthy voters stay voters (no churn), earliest joined first, up to
//!   the target; the rest of the target is filled with healthy non-voters
//!   in join order, so a dead voter is replaced by a healthy learner;
//! - a dead voter with no healthy replacement stays a voter: removing it
//!   would not add fault tolerance, and it may come back;
//! - the group size is kept odd (an even group tolerates no more failures
//!   than the odd one below it) by dropping the last node added;
//! - no healthy node at all: the voters are left as they are.

use std::collections::BTreeSet;

use crate::cluster::transport::NodeId;

/// The desired voter set.
pub fn desired_voters(healthy: &[NodeId], current: &BTreeSet<NodeId>) -> BTreeSet<NodeId> {
    if healthy.is_empty() {
        return current.clone();
    }
    let target = if healthy.len() >= 7 { 5 } else { 3 };
    let mut chosen: Vec<NodeId> = Vec::new();
    for id in healthy {
        if current.contains(id) && !chosen.contains(id) && chosen.len() < target {
            chosen.push(*id);
        }
    }
    for id in healthy {
        if chosen.len() >= target {
            break;
        }
        if !chosen.contains(id) {
            chosen.push(*id);
        }
    }
    for id in current {
        if chosen.len() >= target {
            break;
        }
        if !chosen.contains(id) {
            chosen.push(*id);
        }
    }
    if chosen.len().is_multiple_of(2) {
        // Drop the last addition (a learner if any was added).
        chosen.pop();
    }
    chosen.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn first_three_then_five_from_seven() {
        assert_eq!(desired_voters(&[1], &set(&[])), set(&[1]));
        assert_eq!(desired_voters(&[1, 2], &set(&[1])), set(&[1]));
        assert_eq!(desired_voters(&[1, 2, 3], &set(&[1])), set(&[1, 2, 3]));
        assert_eq!(
            desired_voters(&[1, 2, 3, 4, 5, 6], &set(&[1, 2, 3])),
            set(&[1, 2, 3])
        );
        let seven = [1, 2, 3, 4, 5, 6, 7];
        assert_eq!(
            desired_voters(&seven, &set(&[1, 2, 3])),
            set(&[1, 2, 3, 4, 5])
        );
    }

    #[test]
    fn dead_voter_replaced_by_learner() {
        // 2 died; 4 is the earliest healthy learner.
        assert_eq!(
            desired_voters(&[1, 3, 4, 5], &set(&[1, 2, 3])),
            set(&[1, 3, 4])
        );
        // Healthy voters are kept even if they joined later.
        assert_eq!(
            desired_voters(&[1, 2, 5, 6], &set(&[5, 6, 9])),
            set(&[5, 6, 1])
        );
    }

    #[test]
    fn dead_voter_without_replacement_stays() {
        assert_eq!(desired_voters(&[1, 2], &set(&[1, 2, 3])), set(&[1, 2, 3]));
        assert_eq!(desired_voters(&[], &set(&[1, 2, 3])), set(&[1, 2, 3]));
    }

    #[test]
    fn shrinking_below_seven_keeps_the_earliest() {
        let healthy = [1, 2, 3, 4, 5, 6];
        assert_eq!(
            desired_voters(&healthy, &set(&[1, 2, 3, 4, 7])),
            set(&[1, 2, 3])
        );
    }

    #[test]
    fn size_is_odd() {
        for n in 1..12u64 {
            let healthy: Vec<NodeId> = (1..=n).collect();
            for cur in [set(&[]), set(&[1]), set(&[1, 2]), set(&[2, 3, 4, 5])] {
                let v = desired_voters(&healthy, &cur);
                assert_eq!(v.len() % 2, 1, "n={n} cur={cur:?} -> {v:?}");
            }
        }
    }
}
