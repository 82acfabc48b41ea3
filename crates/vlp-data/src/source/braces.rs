//! WebDataset-style brace expansion of shard patterns.

/// Most names one pattern may expand to (a million shards); more is a typo, not a dataset.
pub const MAX_EXPANSION: u64 = 1_000_000;

/// Expands `{a..b}` numeric ranges (zero-padded to the width of `a`) and `{x,y,z}` lists, as
/// webdataset's `braceexpand` does: `shards-{000..002}.tar` → three names. At most
/// [`MAX_EXPANSION`] names: the count is checked before anything is allocated.
pub fn expand_braces(pattern: &str) -> Result<Vec<String>, String> {
    let n = expansion_count(pattern)?;
    if n > MAX_EXPANSION {
        return Err(format!(
            "\"{pattern}\" expands to {n} names, more than the limit of {MAX_EXPANSION}"
        ));
    }
    expand(pattern)
}

/// How many names `pattern` expands to (saturating), without expanding it.
fn expansion_count(pattern: &str) -> Result<u64, String> {
    let Some(open) = pattern.find('{') else {
        return Ok(1);
    };
    let close = pattern[open..]
        .find('}')
        .map(|c| open + c)
        .ok_or_else(|| format!("unclosed '{{' in \"{pattern}\""))?;
    let body = &pattern[open + 1..close];
    let items = match body.split_once("..") {
        Some((a, b)) => {
            let lo: u64 = a
                .parse()
                .map_err(|_| format!("\"{a}\" is not a number in \"{pattern}\""))?;
            let hi: u64 = b
                .parse()
                .map_err(|_| format!("\"{b}\" is not a number in \"{pattern}\""))?;
            if lo > hi {
                return Err(format!("empty range {{{body}}} in \"{pattern}\""));
            }
            (hi - lo).saturating_add(1)
        }
        None => body.split(',').count() as u64,
    };
    Ok(items.saturating_mul(expansion_count(&pattern[close + 1..])?))
}

fn expand(pattern: &str) -> Result<Vec<String>, String> {
    let Some(open) = pattern.find('{') else {
        return Ok(vec![pattern.to_string()]);
    };
    let close = pattern[open..]
        .find('}')
        .map(|c| open + c)
        .ok_or_else(|| format!("unclosed '{{' in \"{pattern}\""))?;
    let (head, body, tail) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    let items: Vec<String> = if let Some((a, b)) = body.split_once("..") {
        let (lo, hi): (u64, u64) = (
            a.parse()
                .map_err(|_| format!("\"{a}\" is not a number in \"{pattern}\""))?,
            b.parse()
                .map_err(|_| format!("\"{b}\" is not a number in \"{pattern}\""))?,
        );
        if lo > hi {
            return Err(format!("empty range {{{body}}} in \"{pattern}\""));
        }
        (lo..=hi)
            .map(|i| format!("{i:0width$}", width = a.len()))
            .collect()
    } else {
        body.split(',').map(str::to_string).collect()
    };
    let mut out = Vec::new();
    for item in items {
        for rest in expand(tail)? {
            out.push(format!("{head}{item}{rest}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_lists_and_nesting() {
        assert_eq!(expand_braces("a.tar").unwrap(), vec!["a.tar"]);
        assert_eq!(
            expand_braces("s-{008..011}.tar").unwrap(),
            vec!["s-008.tar", "s-009.tar", "s-010.tar", "s-011.tar"]
        );
        assert_eq!(
            expand_braces("{x,y}/{0..1}").unwrap(),
            vec!["x/0", "x/1", "y/0", "y/1"]
        );
        assert!(expand_braces("s-{3..1}.tar").is_err());
        let e = expand_braces("x{0..99999999999}.tar").unwrap_err();
        assert!(e.contains("limit"), "{e}");
        let e = expand_braces("{0..999}/{0..999}/{0..9}").unwrap_err();
        assert!(e.contains("10000000"), "{e}");
        assert!(expand_braces("s-{3..1.tar").is_err());
    }
}
