//! Relay port bookkeeping: which ports of the configured range are taken.
//!
//! A bitset over the range, so that finding a free port, an even one (EVEN-PORT) or an
//! even one whose successor is also free (EVEN-PORT with the R bit) costs a scan of words
//! and no allocation. The scan starts at a random port so that relay ports are not
//! predictable. A port marked here may still be taken by another process; the driver
//! reports that when it binds, and the server picks again.

use rand::Rng;

/// Which ports of a range are in use.
#[derive(Clone, Debug)]
pub(crate) struct PortAllocator {
    min: u16,
    max: u16,
    used: Vec<u64>,
}

impl PortAllocator {
    pub fn new(min: u16, max: u16) -> Self {
        let len = usize::from(max - min) + 1;
        Self {
            min,
            max,
            used: vec![0; len.div_ceil(64)],
        }
    }

    fn is_free(&self, port: u16) -> bool {
        if port < self.min || port > self.max {
            return false;
        }
        let i = usize::from(port - self.min);
        self.used[i / 64] & (1 << (i % 64)) == 0
    }

    fn set(&mut self, port: u16, used: bool) {
        let i = usize::from(port - self.min);
        let bit = 1u64 << (i % 64);
        if used {
            self.used[i / 64] |= bit;
        } else {
            self.used[i / 64] &= !bit;
        }
    }

    /// Takes a free port (even if `even`; with its successor free too if `pair`, which is
    /// then taken as well). `None` when no port fits.
    pub fn take(&mut self, rng: &mut impl Rng, even: bool, pair: bool) -> Option<u16> {
        let span = u32::from(self.max - self.min) + 1;
        let start = rng.gen_range(0..span);
        for step in 0..span {
            let port = (u32::from(self.min) + (start + step) % span) as u16;
            if (even || pair) && port % 2 != 0 {
                continue;
            }
            if !self.is_free(port) {
                continue;
            }
            if pair {
                let Some(next) = port.checked_add(1) else {
                    continue;
                };
                if !self.is_free(next) {
                    continue;
                }
                self.set(next, true);
            }
            self.set(port, true);
            return Some(port);
        }
        None
    }

    pub fn release(&mut self, port: u16) {
        if port >= self.min && port <= self.max {
            self.set(port, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn takes_every_port_once_then_none() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut ports = PortAllocator::new(50_000, 50_009);
        let mut taken: Vec<u16> = (0..10)
            .map(|_| ports.take(&mut rng, false, false).unwrap())
            .collect();
        taken.sort_unstable();
        assert_eq!(taken, (50_000..=50_009).collect::<Vec<_>>());
        assert_eq!(ports.take(&mut rng, false, false), None);
        ports.release(50_004);
        assert_eq!(ports.take(&mut rng, false, false), Some(50_004));
    }

    #[test]
    fn even_ports_and_pairs() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut ports = PortAllocator::new(40_001, 40_006);
        for _ in 0..20 {
            let port = ports.take(&mut rng, true, false).unwrap();
            assert_eq!(port % 2, 0);
            ports.release(port);
        }
        let first = ports.take(&mut rng, true, true).unwrap();
        assert!(first == 40_002 || first == 40_004, "{first}");
        assert!(!ports.is_free(first) && !ports.is_free(first + 1));
        let second = ports.take(&mut rng, true, true).unwrap();
        assert_eq!(u32::from(first) + u32::from(second), 40_002 + 40_004);
        // 40006 is even but 40007 is outside the range.
        assert_eq!(ports.take(&mut rng, true, true), None);
        assert_eq!(ports.take(&mut rng, true, false), Some(40_006));
        assert_eq!(ports.take(&mut rng, false, false), Some(40_001));
        assert_eq!(ports.take(&mut rng, false, false), None);
        ports.release(39_999);
        assert!(!ports.is_free(39_999));
    }

    #[test]
    fn full_range() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut ports = PortAllocator::new(65_534, 65_535);
        assert_eq!(ports.take(&mut rng, true, true), Some(65_534));
        assert_eq!(ports.take(&mut rng, false, false), None);
        ports.release(65_535);
        assert_eq!(ports.take(&mut rng, false, false), Some(65_535));
    }
}
