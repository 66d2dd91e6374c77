//! Latency of exported models, measured in tract: the numbers the reports quote.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::tract_latencies_ms;
use crate::error::Result;
use crate::ir::Graph;

/// Median milliseconds per batch of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Latency {
    pub batch_1: f64,
    pub batch_64: f64,
    /// Runs per median.
    pub runs: usize,
    pub runtime: String,
}

/// Latencies of models that take `g`'s inputs (e.g. before and after pruning), measured
/// round-robin at batch 1 and batch 64 so that machine noise does not skew their ratio.
pub fn measure(g: &Graph, models: &[&[u8]], runs: usize) -> Result<Vec<Latency>> {
    let at = |batch: usize| -> Result<Vec<f64>> {
        let inputs: Vec<_> = g
            .inputs
            .iter()
            .enumerate()
            .map(|(i, v)| super::probe_tensor(g, i, &v.shape(batch), 3 + i as u64))
            .collect();
        tract_latencies_ms(models, &inputs, runs)
    };
    let (b1, b64) = (at(1)?, at(64)?);
    Ok(b1
        .into_iter()
        .zip(b64)
        .map(|(batch_1, batch_64)| Latency {
            batch_1,
            batch_64,
            runs,
            runtime: "tract".to_string(),
        })
        .collect())
}

/// Dense and pruned latencies of a pruning (`original` is the dense graph), or `None` for
/// both when `runs` is 0 (not measured).
pub fn before_after(
    original: &Graph,
    dense: &[u8],
    pruned: &[u8],
    runs: usize,
) -> Result<(Option<Latency>, Option<Latency>)> {
    if runs == 0 {
        return Ok((None, None));
    }
    let mut l = measure(original, &[dense, pruned], runs)?;
    let pruned = l.pop();
    Ok((l.pop(), pruned))
}

/// Median milliseconds of each runner, after one warm-up call of each, calling them round-robin
/// (one call of each in turn, each round starting one runner later) so that a slow phase of a
/// shared machine, or whatever the previous run left in the caches, hits every model alike
/// instead of skewing their ratio.
pub(crate) fn round_robin_medians_ms(
    runners: &mut [Box<dyn FnMut() -> Result<()> + '_>],
    runs: usize,
) -> Result<Vec<f64>> {
    for run in runners.iter_mut() {
        run()?;
    }
    let n = runners.len();
    let mut times = vec![Vec::with_capacity(runs); n];
    for round in 0..runs.max(1) {
        for k in 0..n {
            let i = (round + k) % n;
            let start = std::time::Instant::now();
            runners[i]()?;
            times[i].push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(times
        .into_iter()
        .map(|mut t| {
            t.sort_by(|a, b| a.total_cmp(b));
            t[t.len() / 2]
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn round_robin_warms_up_then_times_every_runner_each_round() {
        let calls = std::cell::RefCell::new(Vec::new());
        let mut runners: Vec<Box<dyn FnMut() -> Result<()>>> = (0..3)
            .map(|i| {
                let calls = &calls;
                Box::new(move || {
                    calls.borrow_mut().push(i);
                    Ok(())
                }) as Box<dyn FnMut() -> Result<()>>
            })
            .collect();
        let medians = round_robin_medians_ms(&mut runners, 4).unwrap();
        assert_eq!(medians.len(), 3);
        drop(runners);
        let calls = calls.into_inner();
        // One warm-up each, then 4 rounds of 3, each round starting one runner later.
        assert_eq!(&calls[..3], &[0, 1, 2]);
        assert_eq!(&calls[3..6], &[0, 1, 2]);
        assert_eq!(&calls[6..9], &[1, 2, 0]);
        assert_eq!(&calls[9..12], &[2, 0, 1]);
        assert_eq!(calls.len(), 15);
    }

    #[test]
    fn a_failing_runner_fails_the_measurement() {
        let mut runners: Vec<Box<dyn FnMut() -> Result<()>>> =
            vec![Box::new(|| Err(Error::Internal("boom".into())))];
        assert!(round_robin_medians_ms(&mut runners, 3).is_err());
    }
}
