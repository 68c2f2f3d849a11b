//! The running CPU's data caches: size, associativity, line size and how many logical CPUs
//! share each level. The GEMM derives its cache blocking from them (see `gemm::Blocking`).
//!
//! Read from Linux sysfs (`/sys/devices/system/cpu/cpu0/cache/index*`), else from CPUID's
//! deterministic cache parameters (leaf 4 on Intel, 0x8000001D on AMD), else a conservative
//! default (32 KiB 8-way L1d, 512 KiB 8-way L2, 8 MiB 16-way L3).

use std::sync::OnceLock;

/// One cache level as the blocking model sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cache {
    /// Capacity in bytes.
    pub size: usize,
    /// Associativity (ways per set).
    pub ways: usize,
    /// Line size in bytes.
    pub line: usize,
    /// Logical CPUs sharing this cache (1 for a private cache).
    pub shared_by: usize,
}

impl Cache {
    /// Number of sets: size / (ways * line).
    pub fn sets(&self) -> usize {
        self.size / (self.ways * self.line).max(1)
    }
    /// Bytes in one way (sets * line): the unit the BLIS model counts in.
    pub fn way_bytes(&self) -> usize {
        self.sets() * self.line
    }
}

/// The data caches of the running CPU, and where they were read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caches {
    pub l1d: Cache,
    pub l2: Cache,
    pub l3: Cache,
    /// "sysfs", "cpuid" or "default".
    pub source: &'static str,
}

impl Caches {
    /// The defaults used when neither sysfs nor CPUID answers.
    pub const DEFAULT: Caches = Caches {
        l1d: Cache {
            size: 32 << 10,
            ways: 8,
            line: 64,
            shared_by: 1,
        },
        l2: Cache {
            size: 512 << 10,
            ways: 8,
            line: 64,
            shared_by: 1,
        },
        l3: Cache {
            size: 8 << 20,
            ways: 16,
            line: 64,
            shared_by: 8,
        },
        source: "default",
    };

    /// The running CPU's caches, read once.
    pub fn get() -> Caches {
        static CACHES: OnceLock<Caches> = OnceLock::new();
        *CACHES.get_or_init(|| from_sysfs().or_else(from_cpuid).unwrap_or(Caches::DEFAULT))
    }

    /// One line for logs and benchmark headers.
    pub fn describe(&self) -> String {
        let c = |c: &Cache| {
            let size = if c.size >= 1 << 20 {
                format!("{} MiB", c.size >> 20)
            } else {
                format!("{} KiB", c.size >> 10)
            };
            if c.shared_by > 1 {
                format!("{size} {}-way (shared by {})", c.ways, c.shared_by)
            } else {
                format!("{size} {}-way", c.ways)
            }
        };
        format!(
            "L1d {}, L2 {}, L3 {} ({})",
            c(&self.l1d),
            c(&self.l2),
            c(&self.l3),
            self.source
        )
    }
}

/// Parses a sysfs size such as "48K", "2048K", "260M" or "1024".
fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, mult) = match s.as_bytes().last()? {
        b'K' => (&s[..s.len() - 1], 1 << 10),
        b'M' => (&s[..s.len() - 1], 1 << 20),
        b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<usize>().ok().map(|n| n * mult)
}

/// Counts the CPUs in a sysfs list such as "0-1,4,6-7".
fn count_cpu_list(s: &str) -> Option<usize> {
    let mut n = 0;
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?);
                n += b.checked_sub(a)? + 1;
            }
            None => {
                part.parse::<usize>().ok()?;
                n += 1;
            }
        }
    }
    Some(n.max(1))
}

fn from_sysfs() -> Option<Caches> {
    let base = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    let (mut l1d, mut l2, mut l3) = (None, None, None);
    for entry in std::fs::read_dir(base).ok()? {
        let dir = entry.ok()?.path();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
        let (Some(level), Some(kind)) = (read("level"), read("type")) else {
            continue;
        };
        if kind.trim() == "Instruction" {
            continue;
        }
        let cache = Cache {
            size: parse_size(&read("size")?)?,
            ways: read("ways_of_associativity")?.trim().parse().ok()?,
            line: read("coherency_line_size")?.trim().parse().ok()?,
            shared_by: read("shared_cpu_list")
                .and_then(|s| count_cpu_list(&s))
                .unwrap_or(1),
        };
        if cache.size == 0 || cache.ways == 0 || cache.line == 0 {
            continue;
        }
        match level.trim() {
            "1" => l1d = Some(cache),
            "2" => l2 = Some(cache),
            "3" => l3 = Some(cache),
            _ => {}
        }
    }
    let l1d = l1d?;
    let l2 = l2?;
    // A CPU without an L3 (some VMs report none): treat the L2 as the last level.
    let l3 = l3.unwrap_or(l2);
    Some(Caches {
        l1d,
        l2,
        l3,
        source: "sysfs",
    })
}

#[cfg(target_arch = "x86_64")]
fn from_cpuid() -> Option<Caches> {
    use std::arch::x86_64::__cpuid;
    // CPUID exists on every x86-64 CPU (a safe intrinsic); leaves past the maximum return zeros.
    // Intel answers leaf 4, AMD 0x8000001D, in the same layout.
    let (std_max, ext_max) = (__cpuid(0).eax, __cpuid(0x8000_0000).eax);
    let intel = if std_max >= 4 { cpuid_leaf(4) } else { None };
    intel.or_else(|| {
        if ext_max >= 0x8000_001D {
            cpuid_leaf(0x8000_001D)
        } else {
            None
        }
    })
}

/// The caches a deterministic-cache-parameters leaf lists (subleaf by subleaf until type 0).
#[cfg(target_arch = "x86_64")]
fn cpuid_leaf(leaf: u32) -> Option<Caches> {
    let (mut l1d, mut l2, mut l3) = (None, None, None);
    for sub in 0..16 {
        let r = std::arch::x86_64::__cpuid_count(leaf, sub);
        let kind = r.eax & 0x1f; // 0 none, 1 data, 2 instruction, 3 unified
        if kind == 0 {
            break;
        }
        if kind == 2 {
            continue;
        }
        let level = (r.eax >> 5) & 0x7;
        let ways = ((r.ebx >> 22) & 0x3ff) as usize + 1;
        let parts = ((r.ebx >> 12) & 0x3ff) as usize + 1;
        let line = (r.ebx & 0xfff) as usize + 1;
        let sets = r.ecx as usize + 1;
        let cache = Cache {
            size: ways * parts * line * sets,
            ways,
            line,
            shared_by: ((r.eax >> 14) & 0xfff) as usize + 1,
        };
        match level {
            1 => l1d = Some(cache),
            2 => l2 = Some(cache),
            3 => l3 = Some(cache),
            _ => {}
        }
    }
    let (l1d, l2) = (l1d?, l2?);
    Some(Caches {
        l1d,
        l2,
        l3: l3.unwrap_or(l2),
        source: "cpuid",
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn from_cpuid() -> Option<Caches> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_cpu_lists_parse() {
        assert_eq!(parse_size("48K"), Some(48 << 10));
        assert_eq!(parse_size("2048K\n"), Some(2 << 20));
        assert_eq!(parse_size("260M"), Some(260 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("x"), None);
        assert_eq!(count_cpu_list("0-1\n"), Some(2));
        assert_eq!(count_cpu_list("0,2,4-7"), Some(6));
        assert_eq!(count_cpu_list("3"), Some(1));
        assert_eq!(count_cpu_list("2-1"), None);
    }

    #[test]
    fn the_running_cpu_has_plausible_caches() {
        let c = Caches::get();
        for (name, l) in [("L1d", c.l1d), ("L2", c.l2), ("L3", c.l3)] {
            assert!(l.size >= 4 << 10, "{name} {l:?}");
            assert!(l.ways >= 1 && l.line >= 16 && l.sets() >= 1, "{name} {l:?}");
        }
        assert!(c.l2.size >= c.l1d.size, "{c:?}");
        #[cfg(target_arch = "x86_64")]
        if let Some(id) = from_cpuid() {
            // Where both answer, they agree on the private levels.
            if c.source == "sysfs" {
                assert_eq!((id.l1d.size, id.l1d.ways), (c.l1d.size, c.l1d.ways));
            }
        }
    }
}
