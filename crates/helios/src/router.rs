//! The route table: methods, notification handlers and middleware, resolved
//! once at build time so a call finds its whole chain with one lookup.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use helios_protocol::{ParseMode, is_reserved};

use crate::error::RegisterError;
use crate::glob::Pattern;
use crate::handler::{ErasedEvent, ErasedMethod};
use crate::middleware::{Middleware, Next};

/// Per-method options.
///
/// ```
/// use std::time::Duration;
/// let opts = helios::MethodOptions::new().timeout(Duration::from_secs(30));
/// # drop(opts);
/// ```
#[derive(Debug, Clone, Default)]
pub struct MethodOptions {
    pub(crate) timeout: Option<Duration>,
    pub(crate) ordered: bool,
}

impl MethodOptions {
    /// Default options (the server-wide timeout).
    pub fn new() -> Self {
        Self::default()
    }

    /// Overrides the request timeout for this method.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Runs the calls of one connection to this method one at a time, in
    /// the order they arrived (the connection reads nothing else meanwhile).
    /// For short handlers whose order matters, like `helios:publish`.
    #[must_use]
    pub fn ordered(mut self) -> Self {
        self.ordered = true;
        self
    }
}

/// The middleware that wraps one method, in order.
type Chain = Arc<[Arc<dyn Middleware>]>;

pub(crate) struct Route {
    handler: ErasedMethod,
    chain: Arc<[Arc<dyn Middleware>]>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) inline: bool,
}

impl Route {
    /// A route with no middleware yet (`finish` resolves the chains).
    fn new(handler: ErasedMethod, opts: &MethodOptions) -> Self {
        Self {
            handler,
            chain: Arc::from(Vec::new()),
            timeout: opts.timeout,
            inline: opts.ordered,
        }
    }

    pub(crate) fn next(&self) -> Next {
        Next::new(self.chain.clone(), self.handler.clone())
    }
}

/// Looked up once per request with a name the table already holds or
/// not: the keys are the server's own, so a fast unkeyed-quality hash
/// (foldhash) is enough, and SipHash's flood resistance buys nothing.
type Methods = HashMap<String, Route, foldhash::fast::RandomState>;

#[derive(Default)]
pub(crate) struct RouteTable {
    methods: Methods,
    exact_events: HashMap<String, Vec<ErasedEvent>>,
    pattern_events: Vec<(Pattern, ErasedEvent)>,
    /// Methods registered under a pattern (`gateway:**`), tried in
    /// registration order when no exact name matches.
    pattern_methods: Vec<(Pattern, Route)>,
    middleware: Vec<(Pattern, Arc<dyn Middleware>)>,
    fallback: Option<ErasedMethod>,
}

impl RouteTable {
    pub(crate) fn add_method(
        &mut self,
        name: &str,
        handler: ErasedMethod,
        opts: MethodOptions,
        mode: ParseMode,
    ) -> Result<(), RegisterError> {
        if is_reserved(name) {
            return Err(RegisterError::Reserved(name.to_owned()));
        }
        if name.contains('*') {
            return self.add_method_pattern(name, handler, opts);
        }
        mode.check_method(name)
            .map_err(|reason| RegisterError::InvalidName {
                name: name.to_owned(),
                reason,
            })?;
        self.add_builtin(name, handler, opts)
    }

    fn add_method_pattern(
        &mut self,
        name: &str,
        handler: ErasedMethod,
        opts: MethodOptions,
    ) -> Result<(), RegisterError> {
        let pattern = Pattern::new(name)?;
        if self.pattern_methods.iter().any(|(p, _)| p == &pattern) {
            return Err(RegisterError::Duplicate(name.to_owned()));
        }
        self.pattern_methods
            .push((pattern, Route::new(handler, &opts)));
        Ok(())
    }

    /// Registers without the reserved-namespace check (built-ins only).
    pub(crate) fn add_builtin(
        &mut self,
        name: &str,
        handler: ErasedMethod,
        opts: MethodOptions,
    ) -> Result<(), RegisterError> {
        if self.methods.contains_key(name) {
            return Err(RegisterError::Duplicate(name.to_owned()));
        }
        self.methods
            .insert(name.to_owned(), Route::new(handler, &opts));
        Ok(())
    }

    pub(crate) fn add_event(
        &mut self,
        topic: &str,
        handler: ErasedEvent,
    ) -> Result<(), RegisterError> {
        let pattern = Pattern::new(topic)?;
        if pattern.is_exact() {
            self.exact_events
                .entry(topic.to_owned())
                .or_default()
                .push(handler);
        } else {
            self.pattern_events.push((pattern, handler));
        }
        Ok(())
    }

    pub(crate) fn add_middleware(
        &mut self,
        pattern: &str,
        mw: Arc<dyn Middleware>,
    ) -> Result<(), RegisterError> {
        self.middleware.push((Pattern::new(pattern)?, mw));
        Ok(())
    }

    pub(crate) fn set_fallback(&mut self, handler: ErasedMethod) {
        self.fallback = Some(handler);
    }

    /// Resolves every method's middleware chain, in registration order.
    pub(crate) fn finish(&mut self) {
        let chains: Vec<(String, Chain)> = self
            .methods
            .keys()
            // built-ins are not wrapped by user middleware
            .filter(|name| !is_reserved(name))
            .map(|name| (name.clone(), self.chain_for(name)))
            .collect();
        for (name, chain) in chains {
            if let Some(route) = self.methods.get_mut(&name) {
                route.chain = chain;
            }
        }
    }

    fn chain_for(&self, name: &str) -> Arc<[Arc<dyn Middleware>]> {
        self.middleware
            .iter()
            .filter(|(p, _)| p.matches(name))
            .map(|(_, mw)| mw.clone())
            .collect()
    }

    pub(crate) fn method(&self, name: &str) -> Option<&Route> {
        self.methods.get(name)
    }

    /// A method with no exact route: the first pattern route that matches
    /// it, else the fallback (e.g. the HTTP backend), behind the
    /// middleware that matches the name called. With its timeout and
    /// whether it runs in order.
    pub(crate) fn resolve_unlisted(&self, name: &str) -> Option<(Next, Option<Duration>, bool)> {
        // A pattern (`**`) never answers in the built-ins' namespaces.
        let patterns = if is_reserved(name) {
            &[][..]
        } else {
            &self.pattern_methods[..]
        };
        if let Some((_, route)) = patterns.iter().find(|(p, _)| p.matches(name)) {
            let next = Next::new(self.chain_for(name), route.handler.clone());
            return Some((next, route.timeout, route.inline));
        }
        let handler = self.fallback.clone()?;
        Some((Next::new(self.chain_for(name), handler), None, false))
    }

    pub(crate) fn events(&self, topic: &str) -> Vec<ErasedEvent> {
        let mut out: Vec<ErasedEvent> = self.exact_events.get(topic).cloned().unwrap_or_default();
        out.extend(
            self.pattern_events
                .iter()
                .filter(|(p, _)| p.matches(topic))
                .map(|(_, h)| h.clone()),
        );
        out
    }
}
