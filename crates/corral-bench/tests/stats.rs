//! Statistics against hand-computed expectations.

use corral_bench::record::{FailureClass, Record, Status};
use corral_bench::report::{self, Meta};
use corral_bench::run::RunOutput;
use corral_bench::stats::{self, dist, percentile, ready_after, timeline};
use corral_bench::{hdr, mode::Mode};

fn ready(index: usize, created: f64, ready_at: f64, destroyed: Option<f64>) -> Record {
    let mut r = Record::pending(index, index, 0.0);
    r.set_created(created);
    r.set_ready(ready_at);
    r.destroyed_at_ms = destroyed;
    r
}

fn failed(index: usize) -> Record {
    let mut r = Record::pending(index, index, 0.0);
    r.fail(Status::Failed, FailureClass::HttpError, "503");
    r
}

#[test]
fn nearest_rank_percentiles() {
    let v: Vec<f64> = (1..=10).map(|i| i as f64 * 10.0).collect();
    let d = dist(&v, 0);
    assert_eq!((d.n, d.failures), (10, 0));
    assert_eq!(d.min, Some(10.0));
    assert_eq!(d.p50, Some(50.0)); // rank ceil(0.5×10) = 5
    assert_eq!(d.p90, Some(90.0)); // rank 9
    assert_eq!(d.p95, Some(100.0)); // rank ceil(9.5) = 10
    assert_eq!(d.p99, Some(100.0));
    assert_eq!(d.p999, Some(100.0));
    assert_eq!(d.max, Some(100.0));
    assert_eq!(d.mean, Some(55.0));
    assert_eq!(percentile(&[7.0], 1, 0.0), Some(7.0));
    assert_eq!(percentile(&[], 0, 0.5), None);
}

#[test]
fn all_attempts_count_failures_as_infinitely_slow() {
    let v: Vec<f64> = (1..=10).map(|i| i as f64 * 10.0).collect();
    let d = dist(&v, 2); // 12 attempts
    assert_eq!((d.n, d.failures), (12, 2));
    assert_eq!(d.min, Some(10.0));
    assert_eq!(d.p50, Some(60.0)); // rank 6 of 12
    assert_eq!(d.p90, None); // rank ceil(10.8) = 11: a failure
    assert_eq!(d.p95, None);
    assert_eq!(d.max, None);
    assert_eq!(d.mean, None);
    // Unsorted input, a single success among failures.
    let d = dist(&[30.0, 10.0, 20.0], 0);
    assert_eq!((d.p50, d.max), (Some(20.0), Some(30.0)));
    assert_eq!(dist(&[5.0], 3).p50, None); // rank 2 of 4
}

#[test]
fn summary_views_and_ready_after() {
    let records = vec![ready(0, 40.0, 100.0, None), ready(1, 50.0, 300.0, None), failed(2), ready(3, 60.0, 200.0, None)];
    let s = stats::summarize(&records);
    assert_eq!(s.attempts, 4);
    assert_eq!(s.counts["success"], 3);
    assert_eq!(s.counts["failed"], 1);
    assert_eq!(s.tti_ms.successes.p50, Some(200.0));
    assert_eq!(s.tti_ms.all_attempts.p50, Some(200.0)); // rank 2 of 4
    assert_eq!(s.tti_ms.all_attempts.p90, None);
    assert_eq!(s.allocate_ms.successes.min, Some(40.0));
    assert_eq!(s.first_command_ms.successes.max, Some(250.0)); // 300 - 50
    assert_eq!(s.errors.get("http_error"), Some(&1));
    let r = ready_after(&records);
    assert_eq!((r.p50_ms, r.p90_ms, r.p100_ms), (Some(200.0), None, None));
    let all_ok = ready_after(&records[..2]);
    assert_eq!((all_ok.p50_ms, all_ok.p100_ms), (Some(100.0), Some(300.0)));
}

#[test]
fn timeline_sweep_at_100ms() {
    let records = vec![
        ready(0, 0.0, 10.0, Some(250.0)),    // [0, 250)
        ready(1, 150.0, 160.0, Some(450.0)), // [150, 450)
        ready(2, 50.0, 60.0, None),          // [50, end)
        failed(3),                           // never live
        ready(4, 310.0, 320.0, Some(330.0)), // [310, 330): shorter than a bucket
    ];
    // Buckets of 100 ms up to the end (450): the most alive at once in each.
    // [0,100): A, then A+C = 2; [100,200): +B = 3; [200,300): 3 until A ends;
    // [300,400): B+C, +E = 3; [400,500): 2, then B ends at 450.
    let t = timeline(&records, stats::end_of(&records), 100.0);
    assert_eq!(t.live, vec![2, 3, 3, 3, 2]);
    assert_eq!((t.peak, t.peak_at_ms), (3, 150.0));
}

#[test]
fn segments_split_on_gaps() {
    let mut records: Vec<Record> = (0..6).map(|i| Record::pending(i, i, 0.0)).collect();
    for (r, at) in records.iter_mut().zip([0.0, 0.0, 50.0, 500.0, 550.0, 2000.0]) {
        r.submitted_at_ms = at;
    }
    let s = stats::segments(&records, 100.0);
    let shape: Vec<(f64, f64, usize)> = s.iter().map(|g| (g.from_ms, g.to_ms, g.submitted)).collect();
    assert_eq!(shape, vec![(0.0, 50.0, 3), (500.0, 550.0, 2), (2000.0, 2000.0, 1)]);
}

fn write_run(dir: &std::path::Path, records: Vec<Record>) {
    let out = RunOutput { records, samples: Vec::new(), interrupted: false, started_unix_ms: 1 };
    let meta = Meta::new("corral", serde_json::json!({ "mode": Mode::Burst { count: 3 } }), &out);
    report::write_all(dir, &out.records, &meta).unwrap();
}

#[test]
fn merged_shards_equal_a_single_run() {
    let all: Vec<Record> = (0..10)
        .map(|i| if i == 7 { failed(i) } else { ready(i, 10.0 + i as f64 * 3.3, 200.0 + i as f64 * 17.9, Some(900.0)) })
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, merged) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("m"));
    let shard_b: Vec<Record> = all[6..]
        .iter()
        .cloned()
        .map(|mut r| {
            r.index -= 6;
            r.order -= 6;
            r
        })
        .collect();
    write_run(&a, all[..6].to_vec());
    write_run(&b, shard_b);
    let meta = report::merge(&[a, b], &merged).unwrap();
    assert_eq!(meta.summary, stats::summarize(&all));
    assert_eq!(corral_bench::record::read_jsonl(&merged.join("raw.jsonl")).unwrap(), all);
    let single = hdr::from_records(&all);
    let summed = hdr::load_all(&merged).unwrap();
    for (x, y) in single.iter().zip(&summed) {
        assert_eq!(x, y);
        assert_eq!(x.len(), 9);
    }
    assert_eq!(report::read_meta(&merged).unwrap().shards.len(), 2);
}

#[test]
fn modes_schedule_intended_send_times() {
    assert_eq!(Mode::Burst { count: 3 }.schedule(), Some(vec![0.0; 3]));
    assert_eq!(Mode::Staggered { count: 5, batch: 2, every_ms: 100 }.schedule(), Some(vec![0.0, 0.0, 100.0, 100.0, 200.0]));
    assert_eq!(Mode::Rate { per_second: 4.0, duration_s: 1.0 }.schedule(), Some(vec![0.0, 250.0, 500.0, 750.0]));
    assert_eq!(Mode::Sequential { count: 2 }.schedule(), None);
    assert!(Mode::Burst { count: 0 }.validate().is_err());
}

#[test]
fn shell_protocol_quotes_arguments() {
    use corral_bench::provider::stdio::{command_line, shell_quote};
    assert_eq!(shell_quote("it's"), r"'it'\''s'");
    let line = command_line(&["/usr/bin/node".into(), "-v".into()]);
    assert!(line.starts_with("'/usr/bin/node' '-v' </dev/null 2>&1;"), "{line}");
    assert!(line.ends_with('\n'));
}
