//! StressChaos: `stressors.cpu` (workers, load) as a CPU stress and `stressors.memory`
//! (workers, size, oomScoreAdj, time) as a memory stress, inside each picked container (or
//! the whole pod). Both stressors in one resource are two experiments per placement, with the
//! resource's labels. stress-ng's own dialect (`stressngStressors`, `options`) is refused.

use faultline_proto::v1 as pb;

use super::{
    Translated,
    manifest::{Node, Refusal, Result},
};

/// faultline's cap on workers (agent-core's MAX_WORKERS): more is a typo, not a drill.
const MAX_WORKERS: f64 = 256.0;

pub fn translate(spec: &Node) -> Result<Translated> {
    if spec.has("stressngStressors") {
        return Err(Refusal::at(
            "spec.stressngStressors",
            "stress-ng command lines are not run by faultline: use stressors.cpu and stressors.memory",
        ));
    }
    let containers = spec.strings("containerNames")?.unwrap_or_default();
    let stressors = spec.node("stressors")?.ok_or_else(|| {
        Refusal::at(
            "spec.stressors",
            "required: cpu, memory or both (stressngStressors is refused)",
        )
    })?;
    let mut faults = Vec::new();
    if let Some(cpu) = stressors.node("cpu")? {
        refuse_options(&cpu)?;
        let workers = workers(&cpu, true)?;
        // Chaos Mesh leaves stress-ng's default when load is absent: full load.
        let load = match cpu.number("load")? {
            None => 100.0,
            Some(l) if (1.0..=100.0).contains(&l) && l.fract() == 0.0 => l,
            Some(l) => {
                return Err(Refusal::at(
                    cpu.path_of("load"),
                    format!("{l}: a whole percent from 1 to 100 (0 would add no load)"),
                ));
            }
        };
        cpu.finish()?;
        faults
            .push(pb::fault::Kind::CpuStress(pb::CpuStress { workers, load_percent: load as u32 }));
    }
    if let Some(mem) = stressors.node("memory")? {
        refuse_options(&mem)?;
        let workers = workers(&mem, false)?;
        let size = match mem.string("size")? {
            Some(s) => memory_size(&s).map_err(|why| Refusal::at(mem.path_of("size"), why))?,
            None => {
                return Err(Refusal::at(
                    mem.path_of("size"),
                    "required by faultline (Chaos Mesh's default, all available memory, is not a \
                     drill): bytes (256MB, 1GiB) or a percent (25%)",
                ));
            }
        };
        let oom = match mem.number("oomScoreAdj")? {
            None => None,
            Some(v) if (-1000.0..=1000.0).contains(&v) && v.fract() == 0.0 => Some(v as i32),
            Some(v) => {
                return Err(Refusal::at(
                    mem.path_of("oomScoreAdj"),
                    format!("{v}: a whole number from -1000 to 1000"),
                ));
            }
        };
        // `time` (the docs' growth time, linear): faultline's ramp.
        let ramp =
            mem.duration("time", false)?.map(|(_, d)| faultline_core::wire::convert::duration(d));
        mem.finish()?;
        faults.push(pb::fault::Kind::MemoryStress(pb::MemoryStress {
            size: Some(size),
            workers,
            ramp: ramp.filter(|d| d.seconds != 0 || d.nanos != 0),
            oom_score_adj: oom,
        }));
    }
    stressors.finish()?;
    if faults.is_empty() {
        return Err(Refusal::at("spec.stressors", "names no stressor: give cpu, memory or both"));
    }
    Ok(Translated { faults, containers })
}

fn refuse_options(n: &Node) -> Result<()> {
    if n.has("options") {
        return Err(Refusal::at(
            n.path_of("options"),
            "stress-ng options are not run by faultline (its workers are its own)",
        ));
    }
    Ok(())
}

/// `workers`: 0 (or absent) is faultline's default (CPU: one per CPU the cgroup may use, as
/// stress-ng's --cpu 0; memory: one).
fn workers(n: &Node, cpu: bool) -> Result<u32> {
    match n.number("workers")? {
        None => Ok(0),
        Some(w) if (0.0..=MAX_WORKERS).contains(&w) && w.fract() == 0.0 => Ok(w as u32),
        Some(w) => Err(Refusal::at(
            n.path_of("workers"),
            format!(
                "{w}: faultline runs 0 to {MAX_WORKERS} workers{}",
                if cpu { " (0: one per CPU the target may use)" } else { "" }
            ),
        )),
    }
}

/// Chaos Mesh's memory sizes: "256MB", "1GiB", "512KB", "1024B", "1TB" (KB, MB, GB, TB are
/// powers of 1024, as memStress reads them; KiB... the same), or "25%" (faultline: of the
/// target cgroup's memory limit, of the host's memory when it has none).
pub fn memory_size(s: &str) -> std::result::Result<pb::memory_stress::Size, String> {
    let t = s.trim();
    if let Some(p) = t.strip_suffix('%') {
        return match p.trim().parse::<f64>() {
            Ok(v) if v > 0.0 && v <= 100.0 => Ok(pb::memory_stress::Size::Percent(v)),
            _ => Err(format!("{s:?}: a percent above 0 and at most 100")),
        };
    }
    let digits = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => {
            return Err(format!(
                "{s:?}: bytes with B, KB/KiB, MB/MiB, GB/GiB or TB/TiB, or a percent"
            ));
        }
    };
    match num.parse::<f64>() {
        Ok(v) if v > 0.0 && (v * mult as f64) >= 1.0 => {
            Ok(pb::memory_stress::Size::Bytes((v * mult as f64) as u64))
        }
        _ => Err(format!("{s:?}: a size above 0 (e.g. 256MB, 25%)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(yaml: &str) -> Result<Translated> {
        crate::cli::apply::translate_yaml(translate, yaml)
    }

    #[test]
    fn cpu_and_memory_map_to_two_stresses() {
        let t = run("stressors:\n  cpu: {workers: 2, load: 50}\n  memory: {workers: 4, size: 256MB, oomScoreAdj: -100, time: 10s}\ncontainerNames: [app]\n").unwrap();
        assert_eq!(t.containers, vec!["app".to_string()]);
        assert_eq!(
            t.faults[0],
            pb::fault::Kind::CpuStress(pb::CpuStress { workers: 2, load_percent: 50 })
        );
        let pb::fault::Kind::MemoryStress(m) = &t.faults[1] else { panic!() };
        assert_eq!(m.size, Some(pb::memory_stress::Size::Bytes(256 << 20)));
        assert_eq!((m.workers, m.oom_score_adj), (4, Some(-100)));
        assert_eq!(m.ramp.unwrap().seconds, 10);
        // Load absent: stress-ng's full load; workers 0: one per CPU.
        let t = run("stressors: {cpu: {workers: 0}}").unwrap();
        assert_eq!(
            t.faults,
            vec![pb::fault::Kind::CpuStress(pb::CpuStress { workers: 0, load_percent: 100 })]
        );
        let t = run("stressors: {memory: {workers: 1, size: '25%'}}").unwrap();
        let pb::fault::Kind::MemoryStress(m) = &t.faults[0] else { panic!() };
        assert_eq!(m.size, Some(pb::memory_stress::Size::Percent(25.0)));
        assert_eq!((m.ramp, m.oom_score_adj), (None, None));
    }

    #[test]
    fn sizes() {
        use pb::memory_stress::Size::{Bytes, Percent};
        assert_eq!(memory_size("1GiB"), Ok(Bytes(1 << 30)));
        assert_eq!(memory_size("512kb"), Ok(Bytes(512 << 10)));
        assert_eq!(memory_size("1.5GB"), Ok(Bytes(3 << 29)));
        assert_eq!(memory_size("4096"), Ok(Bytes(4096)));
        assert_eq!(memory_size("50%"), Ok(Percent(50.0)));
        for bad in ["0", "0%", "101%", "1PB", "MB", "-5MB", "abc"] {
            assert!(memory_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refusals_name_their_path() {
        for (yaml, path) in [
            ("stressngStressors: --cpu 2", "spec.stressngStressors"),
            ("stressors: {cpu: {workers: 1, load: 0}}", "spec.stressors.cpu.load"),
            ("stressors: {cpu: {workers: 1, load: 101}}", "spec.stressors.cpu.load"),
            ("stressors: {cpu: {workers: 9000}}", "spec.stressors.cpu.workers"),
            (
                "stressors: {cpu: {workers: 1, options: ['--cpu-method', 'fft']}}",
                "spec.stressors.cpu.options",
            ),
            ("stressors: {memory: {workers: 1}}", "spec.stressors.memory.size"),
            ("stressors: {memory: {workers: 1, size: 1PB}}", "spec.stressors.memory.size"),
            (
                "stressors: {memory: {size: 1MB, oomScoreAdj: 1001}}",
                "spec.stressors.memory.oomScoreAdj",
            ),
            (
                "stressors: {memory: {size: 1MB, options: ['--vm-hang', '0']}}",
                "spec.stressors.memory.options",
            ),
            ("stressors: {memory: {size: 1MB, time: -5s}}", "spec.stressors.memory.time"),
            ("stressors: {memory: {size: 1MB, swap: 1}}", "spec.stressors.memory.swap"),
            ("stressors: {io: {workers: 1}}", "spec.stressors.io"),
            ("stressors: {}", "spec.stressors"),
            ("containerNames: [a]", "spec.stressors"),
        ] {
            let r = run(yaml).err().unwrap_or_else(|| panic!("{yaml} was accepted"));
            assert_eq!(r.path, path, "{yaml}: {r}");
        }
    }
}
