use std::fmt;

use regex::Regex;

/// Which models a group serves: `include` patterns (none = every model) minus `exclude`
/// patterns. A pattern is a model name with `*` wildcards (`gpt-4*`, `*-mini`, `claude-*-haiku*`),
/// matched against the whole name, or a regular expression between slashes (`/^gpt-4o(-mini)?$/`),
/// which matches anywhere unless anchored. Patterns are compiled once, when the filter is built.
///
/// ```
/// use gpt_load_tower::rewrite::ModelFilter;
///
/// let filter = ModelFilter::new(["gpt-4*", "/^o[13]-/"], ["*-preview"]).unwrap();
/// assert!(filter.allows("gpt-4o-mini"));
/// assert!(filter.allows("o3-mini"));
/// assert!(!filter.allows("gpt-4.5-preview"), "excluded");
/// assert!(!filter.allows("claude-3-haiku"), "not included");
/// assert!(ModelFilter::default().allows("anything"));
/// assert!(ModelFilter::new(["/([/"], [] as [&str; 0]).is_err());
/// ```
#[derive(Clone, Default)]
pub struct ModelFilter {
    include: Vec<ModelPattern>,
    exclude: Vec<ModelPattern>,
}

#[derive(Clone)]
struct ModelPattern {
    source: String,
    regex: Regex,
}

/// A model pattern that does not compile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidModelPattern {
    /// The pattern as written.
    pub pattern: String,
    /// Why it does not compile.
    pub reason: String,
}

impl fmt::Display for InvalidModelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid model pattern `{}`: {}", self.pattern, self.reason)
    }
}

impl std::error::Error for InvalidModelPattern {}

impl crate::context::AllowedModels for ModelFilter {
    fn allows(&self, model: &str) -> bool {
        ModelFilter::allows(self, model)
    }
}

/// Longest compiled pattern, so a filter cannot hold a regular expression that eats memory.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

impl ModelPattern {
    fn new(source: &str) -> Result<Self, InvalidModelPattern> {
        let source = source.trim();
        let invalid = |reason: String| InvalidModelPattern {
            pattern: source.to_owned(),
            reason,
        };
        if source.is_empty() {
            return Err(invalid("the pattern is empty".to_owned()));
        }
        let expression = match source.strip_prefix('/').and_then(|s| s.strip_suffix('/')) {
            Some(regex) if source.len() >= 2 => regex.to_owned(),
            _ => {
                let parts: Vec<String> = source.split('*').map(regex::escape).collect();
                format!("^{}$", parts.join(".*"))
            }
        };
        let regex = regex::RegexBuilder::new(&expression)
            .size_limit(PATTERN_SIZE_LIMIT)
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Self {
            source: source.to_owned(),
            regex,
        })
    }
}

impl ModelFilter {
    /// A filter serving the models that match one of `include` (every model when it is empty)
    /// and none of `exclude`.
    pub fn new<I, E>(include: I, exclude: E) -> Result<Self, InvalidModelPattern>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
        E: IntoIterator,
        E::Item: AsRef<str>,
    {
        Ok(Self {
            include: compile(include)?,
            exclude: compile(exclude)?,
        })
    }

    /// [`new`](Self::new) from two lists written as text: patterns separated by commas or line
    /// breaks. A regular expression runs to the `/` that ends its pattern, so it may hold commas
    /// (`/^gpt-4o(-mini){0,1}$/`).
    ///
    /// ```
    /// use gpt_load_tower::rewrite::ModelFilter;
    ///
    /// let filter = ModelFilter::parse("gpt-4*, /^o[13]-/\nclaude-*", "/-(preview|exp){1,1}$/").unwrap();
    /// assert_eq!(filter.include().collect::<Vec<_>>(), ["gpt-4*", "/^o[13]-/", "claude-*"]);
    /// assert!(!filter.allows("gpt-4.5-preview"));
    /// ```
    pub fn parse(include: &str, exclude: &str) -> Result<Self, InvalidModelPattern> {
        Self::new(split_patterns(include), split_patterns(exclude))
    }

    /// Whether the filter lets every model through.
    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    /// Whether the group serves `model`.
    pub fn allows(&self, model: &str) -> bool {
        let matches = |patterns: &[ModelPattern]| patterns.iter().any(|p| p.regex.is_match(model));
        (self.include.is_empty() || matches(&self.include)) && !matches(&self.exclude)
    }

    /// The include patterns as written.
    pub fn include(&self) -> impl Iterator<Item = &str> {
        self.include.iter().map(|p| p.source.as_str())
    }

    /// The exclude patterns as written.
    pub fn exclude(&self) -> impl Iterator<Item = &str> {
        self.exclude.iter().map(|p| p.source.as_str())
    }
}

/// The patterns of a list written as text (see [`ModelFilter::parse`]).
fn split_patterns(text: &str) -> Vec<&str> {
    let is_separator = |c: char| c == ',' || c == '\n' || c == '\r';
    let mut patterns = Vec::new();
    let mut rest = text.trim_start_matches(|c: char| is_separator(c) || c.is_whitespace());
    while !rest.is_empty() {
        // A regular expression ends at a `/` followed by a separator or the end.
        let end = if rest.starts_with('/') {
            rest.char_indices()
                .skip(1)
                .find(|&(i, c)| {
                    c == '/'
                        && rest[i + 1..]
                            .trim_start_matches([' ', '\t'])
                            .chars()
                            .next()
                            .is_none_or(is_separator)
                })
                .map_or(rest.len(), |(i, _)| i + 1)
        } else {
            rest.find(is_separator).unwrap_or(rest.len())
        };
        let pattern = rest[..end].trim();
        if !pattern.is_empty() {
            patterns.push(pattern);
        }
        rest = rest[end..].trim_start_matches(|c: char| is_separator(c) || c.is_whitespace());
    }
    patterns
}

fn compile<P>(patterns: P) -> Result<Vec<ModelPattern>, InvalidModelPattern>
where
    P: IntoIterator,
    P::Item: AsRef<str>,
{
    patterns
        .into_iter()
        .map(|p| ModelPattern::new(p.as_ref()))
        .collect()
}

impl fmt::Debug for ModelFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelFilter")
            .field("include", &self.include().collect::<Vec<_>>())
            .field("exclude", &self.exclude().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(include: &[&str], exclude: &[&str]) -> ModelFilter {
        ModelFilter::new(include, exclude).unwrap()
    }

    #[test]
    fn wildcards_match_the_whole_name_and_escape_the_rest() {
        let f = filter(&["gpt-4*", "*-haiku", "gemini-?.0"], &[]);
        assert!(f.allows("gpt-4"));
        assert!(f.allows("gpt-4o-mini"));
        assert!(!f.allows("my-gpt-4o"), "anchored at the start");
        assert!(f.allows("claude-3-haiku"));
        assert!(!f.allows("claude-3-haiku-20240307"), "anchored at the end");
        assert!(f.allows("gemini-?.0"), "only `*` is a wildcard");
        assert!(!f.allows("gemini-2.0"));
        let dots = filter(&["gpt-4.1"], &[]);
        assert!(!dots.allows("gpt-441"), "a dot is a dot");
    }

    #[test]
    fn regular_expressions_between_slashes() {
        let f = filter(&["/^o[13]-/", "/flash/"], &["/-exp$/"]);
        assert!(f.allows("o1-mini"));
        assert!(f.allows("gemini-2.0-flash-lite"), "unanchored matches anywhere");
        assert!(!f.allows("gemini-2.0-flash-exp"));
        assert!(!f.allows("o2-mini"));
        // A lone slash is a name, not an empty expression.
        assert!(filter(&["/"], &[]).allows("/"));
    }

    #[test]
    fn exclude_wins_and_empty_include_serves_everything() {
        let f = filter(&[], &["*-preview", "dall-e-*"]);
        assert!(f.allows("gpt-4o"));
        assert!(!f.allows("gpt-4.5-preview"));
        assert!(!f.allows("dall-e-3"));
        assert!(!f.is_empty());
        assert!(ModelFilter::default().is_empty());
    }

    #[test]
    fn lists_split_on_commas_and_lines_but_not_inside_expressions() {
        assert_eq!(split_patterns(""), Vec::<&str>::new());
        assert_eq!(split_patterns(" ,\n "), Vec::<&str>::new());
        assert_eq!(split_patterns("a, b\nc,,d\r\n"), ["a", "b", "c", "d"]);
        assert_eq!(split_patterns("/a{1,3}/, gpt-*"), ["/a{1,3}/", "gpt-*"]);
        assert_eq!(split_patterns("/x,y/z/\n/end"), ["/x,y/z/", "/end"]);
        let f = ModelFilter::parse("/^gpt-4o(-mini){0,1}$/", "").unwrap();
        assert!(f.allows("gpt-4o") && f.allows("gpt-4o-mini") && !f.allows("gpt-4o-audio"));
    }

    #[test]
    fn bad_patterns_are_refused_with_their_text() {
        let err = ModelFilter::new(["ok-*", "/(unclosed/"], [] as [&str; 0]).unwrap_err();
        assert_eq!(err.pattern, "/(unclosed/");
        assert!(err.to_string().contains("invalid model pattern"));
        assert!(ModelFilter::new([" "], [] as [&str; 0]).is_err(), "empty");
        let huge = format!("/{}/", "a{1000}{1000}");
        assert!(ModelFilter::new([huge], [] as [&str; 0]).is_err(), "too large");
    }
}
