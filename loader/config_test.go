package loader

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func intPtr(v int) *int { return &v }

// TestLoadConfigFixtures reads configs shaped like the published ones of each
// supported family and checks every field.
func TestLoadConfigFixtures(t *testing.T) {
	cases := []struct {
		file string
		want Config
	}{
		{"llama-3.1-8b.json", Config{
			Arch: ArchLlama, ModelType: "llama", HiddenSize: 4096, NumLayers: 32, NumHeads: 32, NumKVHeads: 8, HeadDim: 128,
			IntermediateSize: 14336, VocabSize: 128256, RMSNormEps: 1e-5, RopeTheta: 500000,
			RopeScaling:           &RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositionEmbeddings: 8192},
			MaxPositionEmbeddings: 131072, BOSTokenID: 128000, EOSTokenIDs: []int{128001, 128008, 128009}, TorchDType: "bfloat16",
		}},
		{"llama-3.2-1b-tf5.json", Config{ // transformers 5.x: rope_parameters, dtype
			Arch: ArchLlama, ModelType: "llama", HiddenSize: 2048, NumLayers: 16, NumHeads: 32, NumKVHeads: 8, HeadDim: 64,
			IntermediateSize: 8192, VocabSize: 128256, RMSNormEps: 1e-5, RopeTheta: 500000,
			RopeScaling:           &RopeScaling{Type: "llama3", Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositionEmbeddings: 8192},
			MaxPositionEmbeddings: 131072, TieWordEmbeddings: true, BOSTokenID: 128000, EOSTokenIDs: []int{128001, 128008, 128009}, TorchDType: "bfloat16",
		}},
		{"mistral-7b-v0.3.json", Config{
			Arch: ArchMistral, ModelType: "mistral", HiddenSize: 4096, NumLayers: 32, NumHeads: 32, NumKVHeads: 8, HeadDim: 128,
			IntermediateSize: 14336, VocabSize: 32768, RMSNormEps: 1e-5, RopeTheta: 1e6,
			MaxPositionEmbeddings: 32768, BOSTokenID: 1, EOSTokenIDs: []int{2}, TorchDType: "bfloat16",
		}},
		{"mistral-7b-v0.1.json", Config{
			Arch: ArchMistral, ModelType: "mistral", HiddenSize: 4096, NumLayers: 32, NumHeads: 32, NumKVHeads: 8, HeadDim: 128,
			IntermediateSize: 14336, VocabSize: 32000, RMSNormEps: 1e-5, RopeTheta: 10000,
			MaxPositionEmbeddings: 32768, SlidingWindow: intPtr(4096), BOSTokenID: 1, EOSTokenIDs: []int{2}, TorchDType: "bfloat16",
		}},
		{"qwen2.5-7b-instruct.json", Config{
			Arch: ArchQwen2, ModelType: "qwen2", HiddenSize: 3584, NumLayers: 28, NumHeads: 28, NumKVHeads: 4, HeadDim: 128,
			IntermediateSize: 18944, VocabSize: 152064, RMSNormEps: 1e-6, RopeTheta: 1e6,
			MaxPositionEmbeddings: 32768, AttentionBias: true, BOSTokenID: 151643, EOSTokenIDs: []int{151645}, TorchDType: "bfloat16",
		}},
		{"qwen3-8b.json", Config{
			Arch: ArchQwen3, ModelType: "qwen3", HiddenSize: 4096, NumLayers: 36, NumHeads: 32, NumKVHeads: 8, HeadDim: 128,
			IntermediateSize: 12288, VocabSize: 151936, RMSNormEps: 1e-6, RopeTheta: 1e6,
			MaxPositionEmbeddings: 40960, QKNorm: true, BOSTokenID: 151643, EOSTokenIDs: []int{151645}, TorchDType: "bfloat16",
		}},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			got, err := LoadConfig(filepath.Join("testdata", c.file))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, c.want) {
				t.Errorf("got  %+v\nwant %+v", *got, c.want)
			}
		})
	}
}

// fixture returns a testdata config as a mutable map.
func fixture(t *testing.T, file string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// parseMap runs ParseConfig on m encoded as JSON.
func parseMap(t *testing.T, m map[string]any) (*Config, error) {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return ParseConfig(b, "cfg/config.json")
}

func TestConfigVariants(t *testing.T) {
	// Each edit of the Llama 3.1 fixture, and the fields it should change.
	cases := []struct {
		name  string
		edit  func(m map[string]any)
		check func(c *Config) bool
	}{
		{"no num_key_value_heads: MHA", func(m map[string]any) { delete(m, "num_key_value_heads") },
			func(c *Config) bool { return c.NumKVHeads == 32 }},
		{"no rope_theta: 10000", func(m map[string]any) { delete(m, "rope_theta") },
			func(c *Config) bool { return c.RopeTheta == 10000 }},
		{"rope_scaling null", func(m map[string]any) { m["rope_scaling"] = nil },
			func(c *Config) bool { return c.RopeScaling == nil }},
		{"rope_scaling default", func(m map[string]any) { m["rope_scaling"] = map[string]any{"rope_type": "default"} },
			func(c *Config) bool { return c.RopeScaling == nil }},
		{"rope_scaling linear (old 'type' key)", func(m map[string]any) { m["rope_scaling"] = map[string]any{"type": "linear", "factor": 4.0} },
			func(c *Config) bool { return reflect.DeepEqual(*c.RopeScaling, RopeScaling{Type: "linear", Factor: 4}) }},
		{"rope_parameters win over rope_theta", func(m map[string]any) {
			m["rope_parameters"] = map[string]any{"rope_type": "default", "rope_theta": 1e6}
		}, func(c *Config) bool { return c.RopeTheta == 1e6 && c.RopeScaling == nil }},
		{"head_dim null", func(m map[string]any) { m["head_dim"] = nil },
			func(c *Config) bool { return c.HeadDim == 128 }},
		{"head_dim explicit", func(m map[string]any) { m["head_dim"] = 64 },
			func(c *Config) bool { return c.HeadDim == 64 }},
		{"eos int", func(m map[string]any) { m["eos_token_id"] = 7 },
			func(c *Config) bool { return reflect.DeepEqual(c.EOSTokenIDs, []int{7}) }},
		{"eos absent, bos null", func(m map[string]any) { delete(m, "eos_token_id"); m["bos_token_id"] = nil },
			func(c *Config) bool { return c.EOSTokenIDs == nil && c.BOSTokenID == -1 }},
		{"attention_bias true", func(m map[string]any) { m["attention_bias"] = true },
			func(c *Config) bool { return c.AttentionBias }},
		{"tie_word_embeddings absent", func(m map[string]any) { delete(m, "tie_word_embeddings") },
			func(c *Config) bool { return !c.TieWordEmbeddings }},
		{"Qwen2 bias regardless of attention_bias", func(m map[string]any) {
			m["architectures"] = []string{"Qwen2ForCausalLM"}
			m["attention_bias"] = false
		}, func(c *Config) bool { return c.Arch == ArchQwen2 && c.AttentionBias && !c.QKNorm }},
		{"Qwen2 sliding window off", func(m map[string]any) {
			m["architectures"] = []string{"Qwen2ForCausalLM"}
			m["use_sliding_window"] = false
			m["sliding_window"] = 4096
			m["layer_types"] = []string{"full_attention", "full_attention"}
		}, func(c *Config) bool { return c.SlidingWindow == nil }},
		{"Mistral window on every layer (layer_types)", func(m map[string]any) {
			m["architectures"] = []string{"MistralForCausalLM"}
			m["sliding_window"] = 4096
			m["layer_types"] = []string{"sliding_attention", "sliding_attention"}
		}, func(c *Config) bool { return c.SlidingWindow != nil && *c.SlidingWindow == 4096 }},
		{"Llama attention_bias: o_proj too", func(m map[string]any) { m["attention_bias"] = true },
			func(c *Config) bool { return c.AttentionBias && c.OutputBias }},
		{"Qwen3 attention_bias: o_proj too", func(m map[string]any) {
			m["architectures"] = []string{"Qwen3ForCausalLM"}
			m["attention_bias"] = true
		}, func(c *Config) bool { return c.AttentionBias && c.OutputBias && c.QKNorm }},
		{"Qwen2: never an o_proj bias", func(m map[string]any) {
			m["architectures"] = []string{"Qwen2ForCausalLM"}
			m["attention_bias"] = true
		}, func(c *Config) bool { return c.AttentionBias && !c.OutputBias }},
		{"Mistral: attention_bias ignored as transformers does", func(m map[string]any) {
			m["architectures"] = []string{"MistralForCausalLM"}
			m["attention_bias"] = true
		}, func(c *Config) bool { return !c.AttentionBias && !c.OutputBias }},
		{"hidden_act swish", func(m map[string]any) { m["hidden_act"] = "swish" },
			func(c *Config) bool { return c.Arch == ArchLlama }},
		{"partial_rotary_factor 1", func(m map[string]any) { m["partial_rotary_factor"] = 1.0 },
			func(c *Config) bool { return c.Arch == ArchLlama }},
		{"dynamic: context grows by the factor", func(m map[string]any) {
			m["rope_scaling"] = map[string]any{"rope_type": "dynamic", "factor": 2.0}
		}, func(c *Config) bool {
			return reflect.DeepEqual(*c.RopeScaling, RopeScaling{Type: "dynamic", Factor: 2}) && c.ContextLength() == 2*131072
		}},
		{"yarn defaults", func(m map[string]any) {
			m["rope_scaling"] = map[string]any{"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
			m["max_position_embeddings"] = 32768
		}, func(c *Config) bool {
			return reflect.DeepEqual(*c.RopeScaling, RopeScaling{Type: "yarn", Factor: 4, OriginalMaxPositionEmbeddings: 32768, BetaFast: 32, BetaSlow: 1}) &&
				c.ContextLength() == 131072
		}},
		{"yarn every field", func(m map[string]any) {
			m["rope_parameters"] = map[string]any{"rope_type": "yarn", "rope_theta": 1e4, "factor": 40.0, "original_max_position_embeddings": 4096,
				"beta_fast": 16.0, "beta_slow": 2.0, "mscale": 1.0, "mscale_all_dim": 0.5, "attention_factor": 1.5, "truncate": false}
		}, func(c *Config) bool {
			return reflect.DeepEqual(*c.RopeScaling, RopeScaling{Type: "yarn", Factor: 40, OriginalMaxPositionEmbeddings: 4096, BetaFast: 16, BetaSlow: 2,
				Mscale: 1, MscaleAllDim: 0.5, AttentionFactor: 1.5, NoTruncate: true}) && c.ContextLength() == 163840
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := fixture(t, "llama-3.1-8b.json")
			c.edit(m)
			cfg, err := parseMap(t, m)
			if err != nil {
				t.Fatal(err)
			}
			if !c.check(cfg) {
				t.Errorf("unexpected config %+v (rope scaling %+v)", *cfg, cfg.RopeScaling)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	cases := []struct {
		name string
		edit func(m map[string]any)
		want error
		says string // a piece the message must contain
	}{
		{"unknown architecture", func(m map[string]any) { m["architectures"] = []string{"Gemma2ForCausalLM"} },
			ErrUnknownArchitecture, "Qwen3ForCausalLM"},
		{"architectures empty", func(m map[string]any) { m["architectures"] = []string{} }, ErrMissingField, "architectures"},
		{"architectures a string", func(m map[string]any) { m["architectures"] = "LlamaForCausalLM" }, ErrBadConfig, "architectures"},
		{"kv heads do not divide heads", func(m map[string]any) { m["num_key_value_heads"] = 7 }, ErrBadConfig, "num_key_value_heads"},
		{"zero kv heads", func(m map[string]any) { m["num_key_value_heads"] = 0 }, ErrBadConfig, "num_key_value_heads"},
		{"zero hidden size", func(m map[string]any) { m["hidden_size"] = 0 }, ErrBadConfig, "hidden_size"},
		{"negative layers", func(m map[string]any) { m["num_hidden_layers"] = -1 }, ErrBadConfig, "num_hidden_layers"},
		{"absurd vocab", func(m map[string]any) { m["vocab_size"] = 1 << 40 }, ErrBadConfig, "vocab_size"},
		{"hidden not divisible by heads", func(m map[string]any) { m["hidden_size"] = 4097 }, ErrBadConfig, "hidden_size"},
		{"odd head_dim", func(m map[string]any) { m["head_dim"] = 127 }, ErrBadConfig, "head_dim"},
		{"fractional size", func(m map[string]any) { m["hidden_size"] = 4096.5 }, ErrBadConfig, "hidden_size"},
		{"zero eps", func(m map[string]any) { m["rms_norm_eps"] = 0 }, ErrBadConfig, "rms_norm_eps"},
		{"negative rope_theta", func(m map[string]any) { m["rope_theta"] = -1 }, ErrBadConfig, "rope_theta"},
		{"eos a string", func(m map[string]any) { m["eos_token_id"] = "</s>" }, ErrBadConfig, "eos_token_id"},
		{"longrope", func(m map[string]any) { m["rope_scaling"] = map[string]any{"rope_type": "longrope", "factor": 4.0} }, ErrUnsupported, "longrope"},
		{"yarn without factor", func(m map[string]any) { m["rope_scaling"] = map[string]any{"rope_type": "yarn"} }, ErrMissingField, "factor"},
		{"yarn negative beta", func(m map[string]any) {
			m["rope_scaling"] = map[string]any{"rope_type": "yarn", "factor": 4.0, "beta_fast": -1.0}
		}, ErrBadConfig, "beta_fast"},
		{"dynamic without factor", func(m map[string]any) { m["rope_scaling"] = map[string]any{"rope_type": "dynamic"} }, ErrMissingField, "factor"},
		{"hidden_act gelu", func(m map[string]any) { m["hidden_act"] = "gelu_pytorch_tanh" }, ErrUnsupported, `hidden_act "gelu_pytorch_tanh"`},
		{"mlp_bias", func(m map[string]any) { m["mlp_bias"] = true }, ErrUnsupported, "mlp_bias"},
		{"partial rotary", func(m map[string]any) { m["partial_rotary_factor"] = 0.5 }, ErrUnsupported, "partial_rotary_factor 0.5"},
		{"partial rotary in rope_parameters", func(m map[string]any) {
			m["rope_parameters"] = map[string]any{"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.25}
		}, ErrUnsupported, "partial_rotary_factor 0.25"},
		{"quantized", func(m map[string]any) { m["quantization_config"] = map[string]any{"quant_method": "gptq"} }, ErrUnsupported, "quantization_config"},
		{"mixed layer types", func(m map[string]any) {
			m["sliding_window"] = 128
			m["layer_types"] = []string{"sliding_attention", "full_attention"}
		}, ErrUnsupported, "layer_types[1]"},
		{"unknown layer type", func(m map[string]any) { m["layer_types"] = []string{"linear_attention"} }, ErrUnsupported, "linear_attention"},
		{"Qwen2 sliding window in use", func(m map[string]any) {
			m["architectures"] = []string{"Qwen2ForCausalLM"}
			m["use_sliding_window"] = true
			m["sliding_window"] = 4096
		}, ErrUnsupported, "use_sliding_window"},
		{"llama3 without factor", func(m map[string]any) { delete(m["rope_scaling"].(map[string]any), "factor") }, ErrMissingField, "factor"},
		{"llama3 without original context", func(m map[string]any) {
			delete(m["rope_scaling"].(map[string]any), "original_max_position_embeddings")
		}, ErrMissingField, "original_max_position_embeddings"},
		{"llama3 equal freq factors", func(m map[string]any) { m["rope_scaling"].(map[string]any)["high_freq_factor"] = 1.0 }, ErrBadConfig, "high_freq_factor"},
		{"linear zero factor", func(m map[string]any) { m["rope_scaling"] = map[string]any{"rope_type": "linear", "factor": 0} }, ErrBadConfig, "factor"},
		{"zero sliding window", func(m map[string]any) { m["sliding_window"] = 0 }, ErrBadConfig, "sliding_window"},
	}
	// Every required field, removed.
	for _, f := range []string{"architectures", "hidden_size", "num_hidden_layers", "num_attention_heads",
		"intermediate_size", "vocab_size", "max_position_embeddings", "rms_norm_eps"} {
		cases = append(cases, struct {
			name string
			edit func(m map[string]any)
			want error
			says string
		}{"missing " + f, func(m map[string]any) { delete(m, f) }, ErrMissingField, f})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := fixture(t, "llama-3.1-8b.json")
			c.edit(m)
			_, err := parseMap(t, m)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if msg := err.Error(); !strings.Contains(msg, c.says) || !strings.Contains(msg, "cfg/config.json") {
				t.Errorf("error %q should name %q and the file", msg, c.says)
			}
		})
	}
	for _, bad := range []string{"", "{", "[]", "null", `{"architectures": ["LlamaForCausalLM"]`} {
		if _, err := ParseConfig([]byte(bad), "x.json"); err == nil {
			t.Errorf("ParseConfig(%q) succeeded", bad)
		}
	}
	if _, err := LoadConfig(filepath.Join(t.TempDir(), "config.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("absent file: %v, want ErrNotExist", err)
	}
}

func TestArchString(t *testing.T) {
	for a, want := range map[Arch]string{ArchLlama: "LlamaForCausalLM", ArchMistral: "MistralForCausalLM",
		ArchQwen2: "Qwen2ForCausalLM", ArchQwen3: "Qwen3ForCausalLM", Arch(9): "Arch(9)"} {
		if a.String() != want {
			t.Errorf("Arch(%d).String() = %q, want %q", int(a), a.String(), want)
		}
	}
}
