//! ROUGE-L exactly as the `rouge` package 1.0.1 computes it (`Rouge().get_scores(...,
//! avg=True)["rouge-l"]["f"]`), which α-UMi's evaluator uses: summary-level union-LCS
//! over `.`-split sentences, with words counted as **sets** (the package's default
//! `exclusive=True`), its LCS back-tracking tie-break, and `1e-8` in the F denominator.

use std::collections::HashSet;

/// `[" ".join(s.split()) for s in text.split(".") if len(s) > 0]`
fn sentences(text: &str) -> Vec<String> {
    text.split('.')
        .filter(|s| !s.is_empty())
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// `_split_into_words`: every sentence split on single spaces (`""` is a word).
fn words(sentences: &[String]) -> Vec<&str> {
    sentences.iter().flat_map(|s| s.split(' ')).collect()
}

/// The words of one LCS of `x` and `y`, reconstructed as `_recon_lcs` does.
fn recon_lcs<'a>(x: &[&'a str], y: &[&str]) -> Vec<&'a str> {
    let (n, m) = (x.len(), y.len());
    let mut table = vec![vec![0u32; m + 1]; n + 1];
    for i in 1..=n {
        for j in 1..=m {
            table[i][j] = if x[i - 1] == y[j - 1] {
                table[i - 1][j - 1] + 1
            } else {
                table[i - 1][j].max(table[i][j - 1])
            };
        }
    }
    let (mut i, mut j) = (n, m);
    let mut out = Vec::new();
    while i > 0 && j > 0 {
        if x[i - 1] == y[j - 1] {
            out.push(x[i - 1]);
            i -= 1;
            j -= 1;
        } else if table[i - 1][j] > table[i][j - 1] {
            i -= 1;
        } else {
            j -= 1;
        }
    }
    out.reverse();
    out
}

/// ROUGE-L F of one hypothesis against one reference. `None` where the package raises
/// ("Collections must contain at least 1 sentence": an empty or all-`.` text).
pub fn rouge_l_f(hypothesis: &str, reference: &str) -> Option<f64> {
    let hyp = sentences(hypothesis);
    let refs = sentences(reference);
    if hyp.is_empty() || refs.is_empty() {
        return None;
    }
    let m = words(&refs).into_iter().collect::<HashSet<_>>().len() as f64;
    let n = words(&hyp).into_iter().collect::<HashSet<_>>().len() as f64;
    let mut union: HashSet<&str> = HashSet::new();
    for r in &refs {
        let ref_words: Vec<&str> = r.split(' ').collect();
        for h in &hyp {
            let hyp_words: Vec<&str> = h.split(' ').collect();
            union.extend(recon_lcs(&ref_words, &hyp_words));
        }
    }
    let llcs = union.len() as f64;
    let (r, p) = (llcs / m, llcs / n);
    Some(2.0 * ((p * r) / (p + r + 1e-8)))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values computed with the rouge 1.0.1 package:
    //   Rouge().get_scores(h, r)[0]["rouge-l"]["f"]
    #[test]
    fn identical_texts_score_just_under_one() {
        assert_eq!(
            rouge_l_f("The answer is 42.", "The answer is 42."),
            Some(2.0 * (1.0 / (2.0 + 1e-8)))
        );
    }

    #[test]
    fn set_semantics_and_sentence_split() {
        // hyp words {the, cat, sat} (3), ref words {the, cat, ran} (3); LCS "the cat".
        let f = rouge_l_f("the cat sat", "the cat ran").unwrap();
        let (p, r) = (2.0 / 3.0, 2.0 / 3.0);
        assert!((f - 2.0 * p * r / (p + r + 1e-8)).abs() < 1e-12);
        // Repeated words count once.
        let f = rouge_l_f("a a a", "a").unwrap();
        assert!((f - 2.0 / (2.0 + 1e-8)).abs() < 1e-12);
    }

    #[test]
    fn empty_hypothesis_is_what_the_package_rejects() {
        assert_eq!(rouge_l_f("", "x"), None);
        assert_eq!(rouge_l_f("...", "x"), None);
        assert!(rouge_l_f("none", "x").is_some());
    }
}
