//! An in-memory [`PeerTransport`]: a router from addresses to handlers,
//! for tests and benchmarks of several Raft nodes in one process.
//!
//! Each node calls through its own [`MemTransport`] (it knows who is
//! calling), so links can be cut: [`MemRouter::isolate`] a node or
//! [`MemRouter::block`] one link, then [`MemRouter::heal`]. A call over a
//! cut link, or to an address with no handler, fails at once with
//! `Unreachable`; an answer that comes back after its link was cut is
//! dropped the same way. No real sockets, no timing games.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::cluster::transport::{BoxFuture, PeerHandler, PeerTransport, RpcKind, TransportError};

#[derive(Default)]
struct Routes {
    handlers: HashMap<String, Arc<dyn PeerHandler>>,
    blocked: HashSet<(String, String)>,
    isolated: HashSet<String>,
}

impl Routes {
    fn cut(&self, from: &str, to: &str) -> bool {
        from != to
            && (self.isolated.contains(from)
                || self.isolated.contains(to)
                || self.blocked.contains(&(from.to_string(), to.to_string())))
    }
}

/// The router shared by every node's [`MemTransport`].
#[derive(Clone, Default)]
pub struct MemRouter {
    routes: Arc<Mutex<Routes>>,
}

impl std::fmt::Debug for MemRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self.lock();
        f.debug_struct("MemRouter")
            .field("peers", &r.handlers.keys().collect::<Vec<_>>())
            .field("isolated", &r.isolated)
            .finish()
    }
}

fn lock(m: &Mutex<Routes>) -> MutexGuard<'_, Routes> {
    // Routes are plain maps; a panicking holder leaves them usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemRouter {
    pub fn new() -> MemRouter {
        MemRouter::default()
    }

    fn lock(&self) -> MutexGuard<'_, Routes> {
        lock(&self.routes)
    }

    /// The transport node `from` calls through.
    pub fn transport(&self, from: &str) -> Arc<MemTransport> {
        Arc::new(MemTransport {
            from: from.to_string(),
            routes: self.routes.clone(),
        })
    }

    /// Calls to `addr` go to `handler` from now on.
    pub fn register(&self, addr: &str, handler: Arc<dyn PeerHandler>) {
        self.lock().handlers.insert(addr.to_string(), handler);
    }

    /// `addr` no longer answers (a killed node).
    pub fn unregister(&self, addr: &str) {
        self.lock().handlers.remove(addr);
    }

    /// Cuts the link between `a` and `b`, both ways.
    pub fn block(&self, a: &str, b: &str) {
        let mut r = self.lock();
        r.blocked.insert((a.to_string(), b.to_string()));
        r.blocked.insert((b.to_string(), a.to_string()));
    }

    /// Cuts every link of `addr`.
    pub fn isolate(&self, addr: &str) {
        self.lock().isolated.insert(addr.to_string());
    }

    /// Restores every cut link.
    pub fn heal(&self) {
        let mut r = self.lock();
        r.blocked.clear();
        r.isolated.clear();
    }
}

/// One node's view of the [`MemRouter`].
pub struct MemTransport {
    from: String,
    routes: Arc<Mutex<Routes>>,
}

impl std::fmt::Debug for MemTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemTransport")
            .field("from", &self.from)
            .finish()
    }
}

impl PeerTransport for MemTransport {
    fn call(
        &self,
        addr: &str,
        kind: RpcKind,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
        let from = self.from.clone();
        let to = addr.to_string();
        let routes = self.routes.clone();
        Box::pin(async move {
            let unreachable = |reason: &str| TransportError::Unreachable {
                addr: to.clone(),
                reason: reason.to_string(),
            };
            let handler = {
                let r = lock(&routes);
                if r.cut(&from, &to) {
                    return Err(unreachable("link cut"));
                }
                r.handlers.get(&to).cloned()
            };
            let Some(handler) = handler else {
                return Err(unreachable("no such peer"));
            };
            let answer = handler.handle(kind, payload).await;
            if lock(&routes).cut(&from, &to) {
                return Err(unreachable("link cut"));
            }
            answer.map_err(|reason| TransportError::Refused {
                addr: to.clone(),
                kind: kind.as_str(),
                reason,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;
    impl PeerHandler for Echo {
        fn handle(
            &self,
            kind: RpcKind,
            payload: Vec<u8>,
        ) -> BoxFuture<'static, Result<Vec<u8>, String>> {
            Box::pin(async move {
                if kind == RpcKind::Membership {
                    return Err("no".into());
                }
                Ok(payload)
            })
        }
    }

    #[tokio::test]
    async fn routes_cuts_and_refusals() {
        let r = MemRouter::new();
        r.register("b", Arc::new(Echo));
        let a = r.transport("a");
        assert_eq!(a.call("b", RpcKind::Vote, vec![1]).await.unwrap(), vec![1]);
        assert!(matches!(
            a.call("b", RpcKind::Membership, vec![]).await,
            Err(TransportError::Refused { .. })
        ));
        assert!(matches!(
            a.call("c", RpcKind::Vote, vec![]).await,
            Err(TransportError::Unreachable { .. })
        ));
        r.isolate("a");
        assert!(matches!(
            a.call("b", RpcKind::Vote, vec![]).await,
            Err(TransportError::Unreachable { .. })
        ));
        r.heal();
        r.block("a", "b");
        assert!(a.call("b", RpcKind::Vote, vec![]).await.is_err());
        r.heal();
        r.unregister("b");
        assert!(a.call("b", RpcKind::Vote, vec![]).await.is_err());
    }
}
