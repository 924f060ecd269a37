package tokenizer

import (
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/lukv/lukv/loader"
)

// SentencePiece BPE vocabularies in GGUF files (tokenizer.ggml.model "llama": Llama 2,
// Mistral) hold tokens, a score per token and token types, not merges. SentencePiece
// encodes by repeatedly merging the adjacent pair whose merged token has the highest
// score; a BPE merge table ranked by the merged token's score does the same, which is
// how transformers' converter (SentencePieceExtractor) turns such a model into a
// tokenizer.json. sentencePieceJSON derives that table and writes Llama 2's
// tokenizer.json around it:
//
//   - normalizer: "▁" in front of the text (unless tokenizer.ggml.add_space_prefix is
//     false), then every space replaced by "▁" (U+2581); no pre-tokenizer: the whole
//     text is one word;
//   - model: BPE with byte fallback (a character missing from the vocabulary becomes
//     its UTF-8 bytes as the <0xNN> tokens) and the unknown-type token as unk;
//   - decoder: "▁" back to spaces, byte tokens back to bytes, and the leading space the
//     normalizer added stripped.
//
// Only normal and user-defined tokens are merge results: control tokens (<s>, </s>) are
// matched as added tokens and never built from pieces, byte and unused tokens never.

// sentencePieceJSON sets tok's normalizer, pre-tokenizer, model and decoder for a
// SentencePiece vocabulary.
func sentencePieceJSON(v *loader.GGUFVocab, vocab map[string]int, tok map[string]any) error {
	n := len(v.Tokens)
	if len(v.Scores) != n {
		return fmt.Errorf("tokenizer.ggml.scores: %d scores for %d tokens (a SentencePiece vocabulary needs one per token)", len(v.Scores), n)
	}
	if len(v.Types) != n {
		return errors.New("tokenizer.ggml.token_type is missing (a SentencePiece vocabulary needs the token types)")
	}
	unk := ""
	for id, t := range v.Types {
		if t == loader.GGUFTokenUnknown && unk == "" {
			unk = v.Tokens[id]
		}
	}
	merges := sentencePieceMerges(v)
	addPrefix := v.AddSpacePrefix == nil || *v.AddSpacePrefix
	replace := map[string]any{"type": "Replace", "pattern": map[string]string{"String": " "}, "content": "▁"}
	normalizer := []any{replace}
	decoder := []any{
		map[string]any{"type": "Replace", "pattern": map[string]string{"String": "▁"}, "content": " "},
		map[string]any{"type": "ByteFallback"},
		map[string]any{"type": "Fuse"},
	}
	if addPrefix {
		normalizer = []any{map[string]any{"type": "Prepend", "prepend": "▁"}, replace}
		decoder = append(decoder, map[string]any{"type": "Strip", "content": " ", "start": 1, "stop": 0})
	}
	model := map[string]any{"type": "BPE", "vocab": vocab, "merges": merges, "byte_fallback": true, "fuse_unk": true}
	if unk != "" {
		model["unk_token"] = unk
	}
	tok["normalizer"] = map[string]any{"type": "Sequence", "normalizers": normalizer}
	tok["pre_tokenizer"] = nil
	tok["model"] = model
	tok["decoder"] = map[string]any{"type": "Sequence", "decoders": decoder}
	return nil
}

// sentencePieceMerges is the merge table of a SentencePiece vocabulary: for every
// normal or user-defined token, each split into two tokens of the vocabulary, ranked
// by the merged token's score (highest first; equal scores by token id, then by the
// split's left and right ids, as transformers orders them).
func sentencePieceMerges(v *loader.GGUFVocab) [][2]string {
	ids := make(map[string]int, len(v.Tokens))
	for id, t := range v.Tokens {
		if _, dup := ids[t]; !dup {
			ids[t] = id
		}
	}
	type merge struct {
		left, right string
		id          int
		score       float32
		lid, rid    int
	}
	var all []merge
	for id, t := range v.Tokens {
		if typ := v.Types[id]; typ != loader.GGUFTokenNormal && typ != loader.GGUFTokenUserDefined {
			continue
		}
		for i := range t {
			if i == 0 || !utf8.RuneStart(t[i]) {
				continue
			}
			l, lok := ids[t[:i]]
			r, rok := ids[t[i:]]
			if lok && rok {
				all = append(all, merge{t[:i], t[i:], id, v.Scores[id], l, r})
			}
		}
	}
	slices.SortStableFunc(all, func(a, b merge) int {
		switch {
		case a.score != b.score:
			if a.score > b.score {
				return -1
			}
			return 1
		case a.id != b.id:
			return a.id - b.id
		case a.lid != b.lid:
			return a.lid - b.lid
		}
		return a.rid - b.rid
	})
	out := make([][2]string, len(all))
	for i, m := range all {
		out[i] = [2]string{m.left, m.right}
	}
	return out
}
