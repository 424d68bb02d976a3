//! The Deployment controller's arithmetic, free of IO: surge/unavailable
//! fenceposts, the next step of a rolling update, proportional scaling.
//! Mirrors `pkg/controller/deployment/{rolling,sync}.go` and
//! `deployment/util`.
//!
//! Every function takes ReplicaSets as [`RsView`]s (spec replicas and
//! available pods) and returns the new `spec.replicas` per ReplicaSet
//! index; the caller writes them.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// What the arithmetic needs of one ReplicaSet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsView {
    /// `spec.replicas`.
    pub replicas: i32,
    /// Available pods, never more than `replicas` (a ReplicaSet scaled
    /// down keeps its surplus pods for a moment; they are not counted).
    pub available: i32,
}

/// A resolved deployment strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Recreate,
    RollingUpdate {
        max_surge: i32,
        max_unavailable: i32,
    },
}

/// `intstr.GetScaledValueFromIntOrPercent`: an int as is, a percentage of
/// `total` rounded up or down. Bad strings are errors.
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let Some(p) = s.strip_suffix('%') else {
                return Err(format!("invalid value for IntOrString: {s:?}"));
            };
            let p: i64 = p
                .parse()
                .map_err(|_| format!("invalid value for IntOrString: {s:?}"))?;
            let num = p * i64::from(total);
            let v = if round_up {
                (num + 99).div_euclid(100)
            } else {
                num.div_euclid(100)
            };
            i32::try_from(v).map_err(|_| format!("value out of range: {s:?}"))
        }
    }
}

/// `ResolveFenceposts`: surge rounds up, unavailable down; both zero
/// means unavailable 1 (a rollout must be able to move).
pub fn resolve_fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    desired: i32,
) -> Result<(i32, i32), String> {
    let quarter = IntOrString::String("25%".into());
    let surge = scaled_value(max_surge.unwrap_or(&quarter), desired, true)?.max(0);
    let unavailable = scaled_value(max_unavailable.unwrap_or(&quarter), desired, false)?.max(0);
    if surge == 0 && unavailable == 0 {
        return Ok((0, 1));
    }
    Ok((surge, unavailable))
}

impl Strategy {
    /// `MaxUnavailable(d)`: never more than `desired`; 0 for Recreate or
    /// no replicas.
    pub fn max_unavailable(self, desired: i32) -> i32 {
        match self {
            Strategy::RollingUpdate {
                max_unavailable, ..
            } if desired > 0 => max_unavailable.min(desired),
            _ => 0,
        }
    }

    pub fn max_surge(self) -> i32 {
        match self {
            Strategy::RollingUpdate { max_surge, .. } => max_surge,
            Strategy::Recreate => 0,
        }
    }
}

fn sum(rs: &[RsView], f: impl Fn(&RsView) -> i32) -> i32 {
    rs.iter().map(f).fold(0i32, i32::saturating_add)
}

/// One rolling-update step: first scale the new ReplicaSet (up within the
/// surge, or down to `desired`); when it cannot move, scale old ones down
/// (unhealthy replicas first, then as far as `maxUnavailable` allows).
/// `olds` must be sorted oldest first. Returns `(new, olds)` replicas.
pub fn rolling_step(
    desired: i32,
    strategy: Strategy,
    new: &RsView,
    olds: &[RsView],
) -> (i32, Vec<i32>) {
    let mut old_replicas: Vec<i32> = olds.iter().map(|o| o.replicas).collect();
    let all: Vec<RsView> = olds.iter().cloned().chain([new.clone()]).collect();
    // reconcileNewReplicaSet
    if new.replicas > desired {
        return (desired, old_replicas);
    }
    if new.replicas < desired {
        let current = sum(&all, |r| r.replicas);
        let max_total = desired.saturating_add(strategy.max_surge());
        if current < max_total {
            let up = (max_total - current).min(desired - new.replicas);
            return (new.replicas + up, old_replicas);
        }
    }
    // reconcileOldReplicaSets
    if sum(olds, |r| r.replicas) == 0 {
        return (new.replicas, old_replicas);
    }
    let all_count = sum(&all, |r| r.replicas);
    let min_available = desired - strategy.max_unavailable(desired);
    let new_unavailable = new.replicas - new.available.min(new.replicas);
    let max_scaled_down = all_count - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return (new.replicas, old_replicas);
    }
    // cleanupUnhealthyReplicas
    let mut total = 0;
    for (i, o) in olds.iter().enumerate() {
        if total >= max_scaled_down {
            break;
        }
        let avail = o.available.min(o.replicas);
        if o.replicas == 0 || o.replicas == avail {
            continue;
        }
        let down = (max_scaled_down - total).min(o.replicas - avail);
        old_replicas[i] -= down;
        total += down;
    }
    // scaleDownOldReplicaSetsForRollingUpdate
    let available = sum(&all, |r| r.available.min(r.replicas));
    if available > min_available {
        let total_down = available - min_available;
        let mut done = 0;
        for r in old_replicas.iter_mut() {
            if done >= total_down {
                break;
            }
            if *r == 0 {
                continue;
            }
            let down = (*r).min(total_down - done);
            *r -= down;
            done += down;
        }
    }
    (new.replicas, old_replicas)
}

/// Proportional scaling (`scale` in sync.go) of the ReplicaSets with
/// replicas when `desired` changed mid-rollout: every active ReplicaSet
/// gets a share of the difference proportional to its size, the
/// remainder going to the largest (newest on ties). `sets` is ordered
/// oldest first; returns the new replicas per set.
pub fn proportional(desired: i32, max_surge: i32, sets: &[RsView]) -> Vec<i32> {
    let mut out: Vec<i32> = sets.iter().map(|s| s.replicas).collect();
    let active: Vec<usize> = (0..sets.len()).filter(|i| sets[*i].replicas > 0).collect();
    match active.as_slice() {
        [] => return out,
        [only] => {
            out[*only] = desired;
            return out;
        }
        _ => {}
    }
    let allowed = desired.saturating_add(max_surge).max(0);
    let total = sum(sets, |r| r.replicas);
    let diff = allowed - total;
    if diff == 0 || total == 0 {
        return out;
    }
    let mut order = active.clone();
    // Largest first; among equals the newest (a higher index) first.
    order.sort_by(|a, b| sets[*b].replicas.cmp(&sets[*a].replicas).then(b.cmp(a)));
    let mut given = 0i32;
    for i in &order {
        let share = i64::from(sets[*i].replicas) * i64::from(diff) / i64::from(total);
        let share = i32::try_from(share).unwrap_or(0);
        let share = if diff > 0 {
            share.min(diff - given)
        } else {
            share.max(diff - given)
        };
        out[*i] += share;
        given += share;
    }
    if let Some(first) = order.first() {
        out[*first] += diff - given;
    }
    for (o, s) in out.iter_mut().zip(sets) {
        if s.replicas > 0 {
            *o = (*o).max(0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    #[test]
    fn surge_rounds_up_and_unavailable_rounds_down() {
        assert_eq!(resolve_fenceposts(None, None, 10), Ok((3, 2)));
        assert_eq!(resolve_fenceposts(None, None, 1), Ok((1, 0)));
        assert_eq!(
            resolve_fenceposts(Some(&pct("0%")), Some(&pct("10%")), 5),
            Ok((0, 1)),
            "both zero after rounding: unavailable becomes 1"
        );
        assert_eq!(
            resolve_fenceposts(Some(&IntOrString::Int(2)), Some(&IntOrString::Int(0)), 3),
            Ok((2, 0))
        );
        assert_eq!(scaled_value(&pct("33%"), 10, true), Ok(4));
        assert_eq!(scaled_value(&pct("33%"), 10, false), Ok(3));
        assert!(scaled_value(&pct("x%"), 10, false).is_err());
        assert!(scaled_value(&IntOrString::String("3".into()), 10, false).is_err());
    }

    #[test]
    fn max_unavailable_is_capped_by_desired() {
        let s = Strategy::RollingUpdate {
            max_surge: 0,
            max_unavailable: 5,
        };
        assert_eq!(s.max_unavailable(3), 3);
        assert_eq!(s.max_unavailable(0), 0);
        assert_eq!(Strategy::Recreate.max_unavailable(3), 0);
    }

    fn v(replicas: i32, available: i32) -> RsView {
        RsView {
            replicas,
            available,
        }
    }

    #[test]
    fn a_rolling_update_first_surges_then_scales_old_down() {
        let s = Strategy::RollingUpdate {
            max_surge: 1,
            max_unavailable: 1,
        };
        // New RS just created: scale it up by the surge.
        assert_eq!(rolling_step(3, s, &v(0, 0), &[v(3, 3)]), (1, vec![3]));
        // Surge used: old may lose 1 (min available 2, new unavailable 1).
        assert_eq!(rolling_step(3, s, &v(1, 0), &[v(3, 3)]), (1, vec![2]));
        // Room again: new goes up.
        assert_eq!(rolling_step(3, s, &v(1, 0), &[v(2, 2)]), (2, vec![2]));
        // New pods not ready: nothing can go down.
        assert_eq!(rolling_step(3, s, &v(2, 0), &[v(2, 2)]), (2, vec![2]));
        // One new ready: one old may go.
        assert_eq!(rolling_step(3, s, &v(2, 1), &[v(2, 2)]), (2, vec![1]));
        assert_eq!(rolling_step(3, s, &v(3, 3), &[v(1, 1)]), (3, vec![0]));
        // Done: nothing to do.
        assert_eq!(rolling_step(3, s, &v(3, 3), &[v(0, 0)]), (3, vec![0]));
    }

    #[test]
    fn unhealthy_old_replicas_go_first_and_new_scales_down_to_desired() {
        let s = Strategy::RollingUpdate {
            max_surge: 0,
            max_unavailable: 1,
        };
        // Old RS has 2 unavailable pods: they go first, as far as the
        // scale-down budget (4 pods - 3 min available) allows.
        assert_eq!(rolling_step(4, s, &v(0, 0), &[v(4, 2)]), (0, vec![3]));
        let wide = Strategy::RollingUpdate {
            max_surge: 0,
            max_unavailable: 2,
        };
        assert_eq!(rolling_step(4, wide, &v(0, 0), &[v(4, 2)]), (0, vec![2]));
        assert_eq!(rolling_step(2, s, &v(5, 5), &[]), (2, vec![]));
        // Availability is capped by replicas: a stale count cannot let
        // more old pods go than min available allows.
        assert_eq!(rolling_step(3, s, &v(1, 1), &[v(2, 5)]), (1, vec![1]));
    }

    #[test]
    fn min_available_holds_at_every_step_of_a_simulated_rollout() {
        for (desired, surge, unavail) in [(3, 1, 1), (5, 2, 0), (4, 0, 2), (10, 3, 2), (1, 1, 0)] {
            let s = Strategy::RollingUpdate {
                max_surge: surge,
                max_unavailable: unavail,
            };
            let (mut new, mut old) = (v(0, 0), v(desired, desired));
            for _ in 0..100 {
                let (n, o) = rolling_step(desired, s, &new, std::slice::from_ref(&old));
                // Pods go away at once; new ones become ready at once.
                old = v(o[0], old.available.min(o[0]));
                new = v(n, new.available.min(n));
                assert!(old.available + new.available >= desired - unavail);
                assert!(old.replicas + new.replicas <= desired + surge);
                new.available = new.replicas;
            }
            assert_eq!((new.replicas, old.replicas), (desired, 0));
        }
    }

    #[test]
    fn proportional_scaling_spreads_the_difference() {
        // 10 replicas + surge 3 split 8/5, scaled to 20: allowed 23, +10.
        let out = proportional(20, 3, &[v(5, 5), v(8, 0)]);
        assert_eq!(out.iter().sum::<i32>(), 23);
        assert_eq!(out, vec![8, 15]);
        // Down.
        let out = proportional(5, 1, &[v(5, 5), v(8, 0)]);
        assert_eq!(out.iter().sum::<i32>(), 6);
        assert!(out.iter().all(|r| *r >= 0));
        assert_eq!(proportional(7, 1, &[v(0, 0), v(3, 3)]), vec![0, 7]);
    }
}
