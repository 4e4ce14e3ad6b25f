//! Tiny glob matcher for model allow-lists and principals: `*` matches any
//! run of characters (including none), `?` exactly one; everything else is
//! literal. Iterative with one backtrack point, so it is linear-ish and never
//! recursive on hostile input.

pub fn matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn basics() {
        assert!(matches("*", ""));
        assert!(matches("*", "gpt-4o"));
        assert!(matches("gpt-*", "gpt-4o"));
        assert!(!matches("gpt-*", "claude"));
        assert!(matches("*-mini", "gpt-4o-mini"));
        assert!(matches("g?t-4o", "gpt-4o"));
        assert!(matches("a*b*c", "axxbyyc"));
        assert!(!matches("a*b*c", "axxbyy"));
        assert!(matches(
            "spiffe://cluster.local/ns/team-a/*",
            "spiffe://cluster.local/ns/team-a/sa/app"
        ));
        assert!(!matches("exact", "exactly"));
        assert!(matches("", ""));
        assert!(!matches("", "x"));
    }

    #[test]
    fn hostile_pattern_is_fast() {
        let text = "a".repeat(5000);
        assert!(!matches("*a*a*a*a*a*a*b", &text));
    }
}
