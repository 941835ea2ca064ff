//! The α-UMi paper's static results (Table 1, arXiv 2401.07324; `../shared/alpha-umi.md`
//! §3.3), the rows a static report sets umi's figures beside: Plan ACC, Act. EM, Hallu.,
//! Arg. F1, R-L, in percent.

pub struct PaperRow {
    pub model: &'static str,
    pub in_domain: [f64; 5],
    pub out_of_domain: [f64; 5],
}

pub const COLUMNS: [&str; 5] = ["Plan ACC", "Act. EM", "Hallu.", "Arg. F1", "R-L"];

pub const ROWS: [PaperRow; 5] = [
    PaperRow {
        model: "ChatGPT (0-shot)",
        in_domain: [83.33, 58.67, 7.40, 45.61, 23.08],
        out_of_domain: [81.62, 54.67, 8.19, 40.08, 22.85],
    },
    PaperRow {
        model: "GPT-4 (0-shot)",
        in_domain: [80.28, 55.52, 5.98, 48.74, 28.69],
        out_of_domain: [77.80, 55.26, 5.12, 47.45, 30.61],
    },
    PaperRow {
        model: "7B Single-LLM",
        in_domain: [81.92, 53.26, 2.32, 45.57, 42.66],
        out_of_domain: [84.61, 56.54, 2.26, 50.09, 47.99],
    },
    PaperRow {
        model: "7B α-UMi w/ reuse",
        in_domain: [88.92, 58.94, 0.57, 52.24, 43.17],
        out_of_domain: [89.72, 60.47, 0.45, 53.60, 46.26],
    },
    PaperRow {
        model: "13B α-UMi w/ reuse",
        in_domain: [87.87, 63.03, 0.37, 57.65, 43.46],
        out_of_domain: [88.73, 64.21, 0.24, 57.38, 42.50],
    },
];
