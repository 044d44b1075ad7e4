//! Optimistic updates: a mutation shows at once as pending with a client
//! mutation id; its own change event (or a refetch that contains the id)
//! confirms it; a failure rolls it back and says why.

use std::future::Future;

use leptos::prelude::*;
use uuid::Uuid;

use crate::error::AppError;
use threadline_realtime::client::{RealtimeEvent, new_mutation_id};

/// One mutation not yet confirmed.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending<T> {
    pub id: Uuid,
    pub value: T,
}

/// The pending mutations of one part of a page, and the last failure.
pub struct Optimistic<T: Send + Sync + 'static> {
    pending: RwSignal<Vec<Pending<T>>>,
    pub error: RwSignal<Option<String>>,
}

impl<T: Send + Sync + 'static> Clone for Optimistic<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: Send + Sync + 'static> Copy for Optimistic<T> {}

impl<T: Clone + Send + Sync + 'static> Default for Optimistic<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone + Send + Sync + 'static> Optimistic<T> {
    pub fn new() -> Self {
        Optimistic {
            pending: RwSignal::new(Vec::new()),
            error: RwSignal::new(None),
        }
    }

    /// Pending values whose ids the confirmed data does not contain yet.
    pub fn unconfirmed(&self, confirmed: &[Uuid]) -> Vec<Pending<T>> {
        self.pending.with(|pending| {
            pending
                .iter()
                .filter(|p| !confirmed.contains(&p.id))
                .cloned()
                .collect()
        })
    }

    pub fn all(&self) -> Vec<Pending<T>> {
        self.pending.get()
    }

    /// Shows `value` at once and runs `mutation` with its id: a failure
    /// removes it again and records the error; success calls `done` (to
    /// refetch), and the change event or the refetch confirms it.
    pub fn run<Fut>(
        &self,
        value: T,
        mutation: impl FnOnce(Uuid) -> Fut,
        done: impl FnOnce() + 'static,
    ) where
        Fut: Future<Output = Result<(), AppError>> + 'static,
    {
        let id = new_mutation_id();
        self.error.set(None);
        self.pending
            .update(|pending| pending.push(Pending { id, value }));
        let future = mutation(id);
        let this = *self;
        leptos::task::spawn_local(async move {
            match future.await {
                Ok(()) => done(),
                Err(e) => {
                    this.settle(id);
                    this.error.set(Some(e.to_string()));
                }
            }
        });
    }

    /// Removes a mutation once its result is visible in confirmed data.
    pub fn settle(&self, id: Uuid) {
        self.pending
            .update(|pending| pending.retain(|p| p.id != id));
    }

    /// For `use_realtime`: a change that carries one of our ids confirms it.
    pub fn confirm_from(&self, event: &RealtimeEvent) {
        if let Some(id) = event.mutation_id() {
            self.settle(id);
        }
    }

    /// Settles, each time `resource` loads, the mutations its data now
    /// contains (`confirmed` lists the mutation ids the data carries).
    pub fn settle_from<D>(
        &self,
        resource: Resource<Result<D, AppError>>,
        confirmed: impl Fn(&D) -> Vec<Uuid> + 'static,
    ) where
        D: Clone + Send + Sync + 'static,
    {
        let this = *self;
        Effect::new(move |_| {
            if let Some(Ok(data)) = resource.get() {
                this.settle_confirmed(&confirmed(&data));
            }
        });
    }

    /// Forgets mutations that the confirmed data now contains.
    pub fn settle_confirmed(&self, confirmed: &[Uuid]) {
        if self
            .pending
            .with_untracked(|p| p.iter().any(|p| confirmed.contains(&p.id)))
        {
            self.pending
                .update(|pending| pending.retain(|p| !confirmed.contains(&p.id)));
        }
    }
}
