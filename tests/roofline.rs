//! `umi bench roofline`: the machine's peaks are measured, and the bundled model's prefill
//! and decode are stated as fractions of them.

mod support;

use support::umi;

#[test]
fn the_roofline_states_prefill_and_decode_as_fractions_of_measured_peaks() {
    let output = umi()
        .args([
            "bench",
            "roofline",
            "--dtype",
            "quantized",
            "--prompt-tokens",
            "64,128",
            "--gen-tokens",
            "8",
            "--repeats",
            "1",
            "--peak-seconds",
            "0.05",
            "--dram-mb",
            "64",
            "--json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let positive = |v: &serde_json::Value| v.as_f64().is_some_and(|x| x > 0.0);
    assert!(positive(&report["peaks"]["f32_gflops"]), "{report}");
    assert!(positive(&report["peaks"]["dram_gbs"]), "{report}");
    // SmolLM2-135M: 30 layers of 576 wide, its matrices about 106 M parameters.
    assert_eq!(report["costs"]["layers"], 30);
    let params = report["costs"]["layer_params"].as_f64().unwrap();
    assert!((100e6..110e6).contains(&params), "{report}");
    let prefill = report["prefill"].as_array().unwrap();
    assert_eq!(prefill.len(), 2);
    for row in prefill {
        let share = row["of_peak"].as_f64().unwrap();
        assert!(
            share > 0.0 && share < 1.0,
            "a prefill above the measured peak: {row}"
        );
    }
    assert!(positive(&report["decode"]["of_dram_read"]), "{report}");
}
