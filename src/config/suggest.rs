//! "Did you mean" suggestions for misspelt names.

/// The candidate closest to `wanted`, if it is close enough to be a plausible typo.
pub fn closest<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    // One edit per three characters: enough for typos, while `b` is not "close" to `a`.
    let length = wanted.chars().count();
    let limit = if length < 3 { 0 } else { (length / 3).max(1) };
    candidates
        .into_iter()
        .filter(|c| *c != wanted)
        .map(|c| (edit_distance(wanted, c), c))
        .filter(|(d, c)| *d <= limit || c.starts_with(wanted) && !wanted.is_empty())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// A `help` line naming the closest candidate.
pub fn did_you_mean<'a>(
    wanted: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    closest(wanted, candidates).map(|c| format!("did you mean `{c}`?"))
}

/// Edit distance counted in characters, where swapping two neighbours counts as one edit (the commonest typo).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "ab"), 2);
        assert_eq!(edit_distance("same", "same"), 0);
        assert_eq!(edit_distance("biuld", "build"), 1);
    }

    #[test]
    fn suggests_close_name_only() {
        assert_eq!(closest("biuld", ["build", "test"]), Some("build"));
        assert_eq!(closest("zzz", ["build", "test"]), None);
        assert_eq!(closest("gen", ["generate", "test"]), Some("generate"));
        assert_eq!(closest("b", ["a"]), None);
    }
}
