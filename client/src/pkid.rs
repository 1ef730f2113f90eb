//! Packet identifier allocation (1..=65535, one space for the whole session).
//!
//! One space, not one per channel: over TCP every channel shares the session, and a server is free to
//! track packet ids per session over QUIC too, so ids are unique across all channels of a connection.

/// A set of in-use packet ids with next-fit allocation: ids are handed out in increasing order and
/// wrap, so a just-freed id is not reused at once (a late duplicate ack for it cannot be confused
/// with a new flow).
pub(crate) struct PacketIds {
    used: Box<[u64; 1024]>,
    in_use: usize,
    /// Where the next search starts.
    next: u16,
}

impl PacketIds {
    pub(crate) fn new() -> Self {
        PacketIds {
            used: Box::new([0; 1024]),
            in_use: 0,
            next: 1,
        }
    }

    /// Number of ids in use.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.in_use
    }

    pub(crate) fn is_used(&self, id: u16) -> bool {
        self.used[usize::from(id / 64)] & (1 << (id % 64)) != 0
    }

    /// A free id, marked used; `None` when all 65,535 are in use.
    pub(crate) fn alloc(&mut self) -> Option<u16> {
        if self.in_use >= usize::from(u16::MAX) {
            return None;
        }
        let mut id = self.next;
        loop {
            if id != 0 && !self.is_used(id) {
                self.used[usize::from(id / 64)] |= 1 << (id % 64);
                self.in_use += 1;
                self.next = id.wrapping_add(1);
                return Some(id);
            }
            id = id.wrapping_add(1);
        }
    }

    /// Marks `id` free; freeing a free id (or 0) is a no-op and returns false.
    pub(crate) fn free(&mut self, id: u16) -> bool {
        if id == 0 || !self.is_used(id) {
            return false;
        }
        self.used[usize::from(id / 64)] &= !(1 << (id % 64));
        self.in_use -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_start_at_one_and_increase() {
        let mut p = PacketIds::new();
        assert_eq!(p.alloc(), Some(1));
        assert_eq!(p.alloc(), Some(2));
        assert!(p.free(1));
        // Next-fit: 1 is free again but not handed out before the space wraps.
        assert_eq!(p.alloc(), Some(3));
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn never_zero_and_wraps() {
        let mut p = PacketIds::new();
        for _ in 0..65_535 {
            let id = p.alloc().expect("free id");
            assert_ne!(id, 0);
        }
        assert_eq!(p.alloc(), None, "all 65,535 ids in use");
        assert!(p.free(40_000));
        assert!(p.free(7));
        assert_eq!(p.alloc(), Some(7), "search wraps past 65,535 and skips 0");
        assert_eq!(p.alloc(), Some(40_000));
        assert_eq!(p.alloc(), None);
    }

    #[test]
    fn double_free_is_harmless() {
        let mut p = PacketIds::new();
        let id = p.alloc().expect("free id");
        assert!(p.free(id));
        assert!(!p.free(id));
        assert!(!p.free(0));
        assert_eq!(p.len(), 0);
    }
}
