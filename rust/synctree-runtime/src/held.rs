//! Requests held back while a game frame makes them, to go together (see `Node::hold`).

use std::sync::Mutex;

/// Items held back between [`Held::hold`] and [`Held::take`].
pub(crate) struct Held<T>(Mutex<Option<Vec<T>>>);

impl<T> Default for Held<T> {
    fn default() -> Self {
        Held(Mutex::new(None))
    }
}

impl<T> Held<T> {
    /// Starts holding (holding already: nothing changes).
    pub(crate) fn hold(&self) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(Vec::new);
    }

    /// Keeps `item` if holding; else hands it back.
    pub(crate) fn keep(&self, item: T) -> Option<T> {
        match self.0.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            Some(held) => {
                held.push(item);
                None
            }
            None => Some(item),
        }
    }

    /// Stops holding; returns what was held, in order.
    pub(crate) fn take(&self) -> Vec<T> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_in_order_only_while_holding() {
        let h = Held::default();
        assert_eq!(h.keep(1), Some(1));
        h.hold();
        assert_eq!((h.keep(2), h.keep(3)), (None, None));
        h.hold();
        assert_eq!(h.take(), [2, 3]);
        assert_eq!(h.keep(4), Some(4));
        assert!(h.take().is_empty());
    }
}
