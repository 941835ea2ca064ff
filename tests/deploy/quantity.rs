//! Kubernetes resource quantities ("500m", "2", "16Gi", "1G") as numbers, to compare a
//! container's requests with its limits as the API server does.

pub fn value(quantity: &str) -> f64 {
    let split = quantity
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let number: f64 = number
        .parse()
        .unwrap_or_else(|_| panic!("quantity {quantity:?}"));
    let scale = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => panic!("quantity {quantity:?}: unknown suffix {suffix:?}"),
    };
    number * scale
}

#[test]
fn reads_the_suffixes() {
    assert_eq!(value("500m"), 0.5);
    assert_eq!(value("2"), 2.0);
    assert_eq!(value("1Gi"), 1024.0 * 1024.0 * 1024.0);
    assert!(value("16Gi") > value("16G"));
}
