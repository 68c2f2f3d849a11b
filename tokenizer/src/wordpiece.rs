//! WordPiece: greedy longest-match-first over a word, continuations prefixed with "##".
//! A word longer than 100 chars (HF's `max_input_chars_per_word`; Google's code used 200), or
//! with a piece no vocabulary entry matches, becomes a single [UNK].

use crate::vocab::Vocab;

/// WordPiece settings (HF names and defaults).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WordPieceConfig {
    pub unk_token: String,
    pub continuing_subword_prefix: String,
    pub max_input_chars_per_word: usize,
}

impl Default for WordPieceConfig {
    fn default() -> Self {
        WordPieceConfig {
            unk_token: "[UNK]".into(),
            continuing_subword_prefix: "##".into(),
            max_input_chars_per_word: 100,
        }
    }
}

/// Splits one word (`chars`) into pieces, appending (id, first char, end char) to `out`, char
/// indices relative to the word. Returns false, and appends nothing, when the word is [UNK].
/// `buf` is scratch space reused across calls (no allocation per piece on the hot path).
pub fn split_word(
    vocab: &Vocab,
    cfg: &WordPieceConfig,
    chars: &[char],
    buf: &mut String,
    out: &mut Vec<(u32, usize, usize)>,
) -> bool {
    if chars.len() > cfg.max_input_chars_per_word {
        return false;
    }
    let mark = out.len();
    let mut start = 0;
    while start < chars.len() {
        let mut end = chars.len();
        let mut found = None;
        while start < end {
            buf.clear();
            if start > 0 {
                buf.push_str(&cfg.continuing_subword_prefix);
            }
            buf.extend(&chars[start..end]);
            if let Some(id) = vocab.id(buf) {
                found = Some(id);
                break;
            }
            end -= 1;
        }
        match found {
            Some(id) => out.push((id, start, end)),
            None => {
                out.truncate(mark);
                return false;
            }
        }
        start = end;
    }
    true
}

/// The vocabulary as two tries over chars, for greedy longest match in one walk per piece
/// instead of a hash lookup per candidate end (the idea of Song et al.'s LinMaxMatch, without its
/// failure links: a word's pieces are found one after another, each by walking from the root).
///
/// `start` holds every token as written (what a word may begin with); `cont` holds the tokens
/// that begin with the continuation prefix, prefix stripped (what may follow a piece).
/// Children of a node are a sorted run of `edges`, searched by binary search.
#[derive(Clone, Debug)]
pub struct Trie {
    /// (first edge, edge count, token id or NONE) per node; node 0 is `start`'s root, node 1
    /// `cont`'s.
    nodes: Vec<(u32, u32, u32)>,
    edges: Vec<(char, u32)>,
    /// The two roots' ASCII children by direct index (NONE where absent): the roots have a child
    /// for every first char in the vocabulary, too many for a quick binary search.
    root_ascii: [[u32; 128]; 2],
    /// The continuation prefix the trie was built with.
    prefix: String,
    /// Unique per trie built in this process: what a [`WordCache`] was filled from.
    uid: u64,
}

const NONE: u32 = u32::MAX;

impl Trie {
    pub fn new(vocab: &Vocab, prefix: &str) -> Trie {
        use std::collections::BTreeMap;
        // Build with maps, then flatten breadth-first into sorted edge runs.
        let mut maps: Vec<(BTreeMap<char, usize>, u32)> =
            vec![(BTreeMap::new(), NONE), (BTreeMap::new(), NONE)];
        let mut insert = |root: usize, s: &str, id: u32| {
            let mut n = root;
            for c in s.chars() {
                let next = maps.len();
                let child = *maps[n].0.entry(c).or_insert(next);
                if child == next {
                    maps.push((BTreeMap::new(), NONE));
                }
                n = child;
            }
            // As the HashMap: a repeated token string maps to its last id.
            maps[n].1 = id;
        };
        for (id, t) in vocab.tokens().iter().enumerate() {
            insert(0, t, id as u32);
            if let Some(rest) = t.strip_prefix(prefix).filter(|_| !prefix.is_empty()) {
                insert(1, rest, id as u32);
            }
        }
        let mut nodes = Vec::with_capacity(maps.len());
        let mut edges = Vec::new();
        for (children, id) in &maps {
            nodes.push((edges.len() as u32, children.len() as u32, *id));
            edges.extend(children.iter().map(|(&c, &n)| (c, n as u32)));
        }
        let mut root_ascii = [[NONE; 128]; 2];
        for (r, table) in root_ascii.iter_mut().enumerate() {
            for (&c, &n) in maps[r].0.iter().filter(|(c, _)| c.is_ascii()) {
                table[c as usize] = n as u32;
            }
        }
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Trie {
            nodes,
            edges,
            root_ascii,
            prefix: prefix.to_string(),
            uid: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Whether this trie was built for `cfg`'s continuation prefix (else the hash lookups serve).
    pub fn serves(&self, cfg: &WordPieceConfig) -> bool {
        self.prefix == cfg.continuing_subword_prefix && !self.prefix.is_empty()
    }

    #[inline]
    fn child(&self, node: u32, c: char) -> Option<u32> {
        if node < 2 && c.is_ascii() {
            let n = self.root_ascii[node as usize][c as usize];
            return (n != NONE).then_some(n);
        }
        let (first, n, _) = self.nodes[node as usize];
        let run = &self.edges[first as usize..(first + n) as usize];
        // Below the roots most nodes have a handful of children: a scan beats a binary search.
        if run.len() <= 8 {
            return run.iter().find(|&&(k, _)| k == c).map(|&(_, n)| n);
        }
        run.binary_search_by_key(&c, |&(k, _)| k)
            .ok()
            .map(|i| run[i].1)
    }

    /// The longest token matching `chars` from the start: (its length in chars, its id).
    fn longest(&self, root: u32, chars: &[char]) -> Option<(usize, u32)> {
        let mut node = root;
        let mut best = None;
        for (i, &c) in chars.iter().enumerate() {
            match self.child(node, c) {
                Some(n) => node = n,
                None => break,
            }
            let id = self.nodes[node as usize].2;
            if id != NONE {
                best = Some((i + 1, id));
            }
        }
        best
    }
}

/// [`split_word`] with the trie: same pieces, one walk per piece. Falls back to the hash
/// lookups when the trie was built for another continuation prefix.
pub fn split_word_trie(
    trie: &Trie,
    vocab: &Vocab,
    cfg: &WordPieceConfig,
    chars: &[char],
    buf: &mut String,
    out: &mut Vec<(u32, usize, usize)>,
) -> bool {
    if !trie.serves(cfg) {
        return split_word(vocab, cfg, chars, buf, out);
    }
    split_word_trie_unchecked(trie, cfg, chars, out)
}

/// [`split_word_trie`] for a caller that has checked [`Trie::serves`] once (per text rather
/// than per word).
pub(crate) fn split_word_trie_unchecked(
    trie: &Trie,
    cfg: &WordPieceConfig,
    chars: &[char],
    out: &mut Vec<(u32, usize, usize)>,
) -> bool {
    if chars.len() > cfg.max_input_chars_per_word {
        return false;
    }
    let mark = out.len();
    let mut start = 0;
    while start < chars.len() {
        match trie.longest(if start == 0 { 0 } else { 1 }, &chars[start..]) {
            Some((len, id)) => {
                out.push((id, start, start + len));
                start += len;
            }
            None => {
                out.truncate(mark);
                return false;
            }
        }
    }
    true
}

/// A per-thread cache of words already split: text repeats its words (a few thousand cover
/// most running text), and one hash probe costs a few cache misses where the trie walk costs
/// two per char. Open addressing over a fixed table; once full it stops inserting (no eviction
/// work on the hot path). Filled for one trie and word-length limit; it empties itself when
/// asked about another.
#[derive(Default)]
pub(crate) struct WordCache {
    owner: (u64, usize),
    slots: Vec<Slot>,
    words: Vec<char>,
    pieces: Vec<(u32, u8, u8)>,
    used: usize,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    /// 0: empty.
    hash: u64,
    word: u32,
    word_len: u8,
    piece: u32,
    /// u8::MAX: the word is [UNK].
    piece_len: u8,
}

const CACHE_SLOTS: usize = 1 << 16;
const CACHE_MAX_WORD: usize = 32;

impl WordCache {
    fn hash(chars: &[char]) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for &c in chars {
            h = (h.rotate_left(5) ^ c as u64).wrapping_mul(0x5170_cb1b_7272_20a5);
        }
        h | 1
    }

    /// The pieces of `chars` (id, start, end), appended to `out`, as
    /// [`split_word_trie_unchecked`] gives them; false for [UNK].
    pub(crate) fn split(
        &mut self,
        trie: &Trie,
        cfg: &WordPieceConfig,
        chars: &[char],
        out: &mut Vec<(u32, usize, usize)>,
    ) -> bool {
        if chars.len() > CACHE_MAX_WORD {
            return split_word_trie_unchecked(trie, cfg, chars, out);
        }
        let owner = (trie.uid, cfg.max_input_chars_per_word);
        if self.owner != owner || self.slots.is_empty() {
            *self = WordCache {
                owner,
                slots: vec![Slot::default(); CACHE_SLOTS],
                ..Default::default()
            };
        }
        let h = Self::hash(chars);
        let mut i = h as usize & (CACHE_SLOTS - 1);
        loop {
            let s = self.slots[i];
            if s.hash == 0 {
                break;
            }
            if s.hash == h
                && s.word_len as usize == chars.len()
                && self.words[s.word as usize..s.word as usize + chars.len()]
                    .iter()
                    .zip(chars)
                    .all(|(a, b)| a == b)
            {
                if s.piece_len == u8::MAX {
                    return false;
                }
                let run = &self.pieces[s.piece as usize..s.piece as usize + s.piece_len as usize];
                out.extend(run.iter().map(|&(id, a, b)| (id, a as usize, b as usize)));
                return true;
            }
            i = (i + 1) & (CACHE_SLOTS - 1);
        }
        // A miss: split, and remember while the table is under three quarters full.
        let mark = out.len();
        let found = split_word_trie_unchecked(trie, cfg, chars, out);
        if self.used < CACHE_SLOTS * 3 / 4 {
            self.slots[i] = Slot {
                hash: h,
                word: self.words.len() as u32,
                word_len: chars.len() as u8,
                piece: self.pieces.len() as u32,
                piece_len: if found {
                    (out.len() - mark) as u8
                } else {
                    u8::MAX
                },
            };
            self.words.extend_from_slice(chars);
            if found {
                self.pieces
                    .extend(out[mark..].iter().map(|&(id, a, b)| (id, a as u8, b as u8)));
            }
            self.used += 1;
        }
        found
    }
}
