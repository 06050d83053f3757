//! Timing of the init's setup phases, reported in its `Pong` for diagnostics.

/// Durations of the setup phases, reported in the `Pong` reply.
pub(crate) struct Phases {
    last: std::time::Instant,
    pub(crate) done: Vec<(String, u64)>,
}

impl Phases {
    pub(crate) fn start() -> Self {
        Phases {
            last: std::time::Instant::now(),
            done: Vec::new(),
        }
    }

    pub(crate) fn mark(&mut self, name: &str) {
        let now = std::time::Instant::now();
        self.done
            .push((name.to_string(), (now - self.last).as_micros() as u64));
        self.last = now;
    }
}
