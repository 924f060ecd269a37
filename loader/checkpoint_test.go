package loader

import (
	"encoding/json"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// tinyModel is a two-layer model's worth of tensors in mixed dtypes.
func tinyModel(rng *rand.Rand) []WriteTensor {
	return []WriteTensor{
		randomTensor(rng, "model.embed_tokens.weight", BF16, 32, 8),
		randomTensor(rng, "model.layers.0.self_attn.q_proj.weight", BF16, 8, 8),
		randomTensor(rng, "model.layers.0.input_layernorm.weight", F32, 8),
		randomTensor(rng, "model.layers.1.self_attn.q_proj.weight", F16, 8, 8),
		randomTensor(rng, "model.layers.1.input_layernorm.weight", F32, 8),
		randomTensor(rng, "model.norm.weight", F32, 8),
		randomTensor(rng, "lm_head.weight", BF16, 32, 8),
	}
}

// checkAll reads every tensor of c back and compares with what was written.
func checkAll(t *testing.T, c *Checkpoint, tensors []WriteTensor) {
	t.Helper()
	var names []string
	for _, w := range tensors {
		names = append(names, w.Name)
		got, err := c.Expect(w.Name, w.Shape...)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, rounded(w)) {
			t.Errorf("Expect(%q): values differ from those written", w.Name)
		}
		if info, ok := c.Info(w.Name); !ok || info.DType != w.DType {
			t.Errorf("Info(%q) = %+v, %v", w.Name, info, ok)
		}
		if raw, err := c.Raw(w.Name); err != nil || len(raw) != len(w.Data)*w.DType.Size() {
			t.Errorf("Raw(%q): %d bytes, %v", w.Name, len(raw), err)
		}
	}
	slices.Sort(names)
	if !slices.Equal(c.Names(), names) {
		t.Errorf("Names() = %v, want %v", c.Names(), names)
	}
}

func TestCheckpointSingleFile(t *testing.T) {
	dir := t.TempDir()
	tensors := tinyModel(rand.New(rand.NewPCG(7, 8)))
	if err := WriteSafetensors(filepath.Join(dir, "model.safetensors"), tensors, nil); err != nil {
		t.Fatal(err)
	}
	c, err := OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	checkAll(t, c, tensors)
}

func TestCheckpointSharded(t *testing.T) {
	dir := t.TempDir()
	tensors := tinyModel(rand.New(rand.NewPCG(9, 10)))
	// 512 bytes per shard: the two 512-byte bf16 matrices get a shard each, the rest pack.
	if err := WriteShardedCheckpoint(dir, tensors, 512); err != nil {
		t.Fatal(err)
	}
	// Expected packing: [embed 512 B] [q 128 + norm 32 + q 128 + norm 32 + norm 32] [lm_head 512 B].
	shards, _ := filepath.Glob(filepath.Join(dir, "model-*.safetensors"))
	want := []string{"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"}
	for i := range shards {
		shards[i] = filepath.Base(shards[i])
	}
	if !slices.Equal(shards, want) {
		t.Fatalf("shards %v, want %v", shards, want)
	}
	// A stray model.safetensors must be ignored when there is an index.
	os.WriteFile(filepath.Join(dir, "model.safetensors"), []byte("junk"), 0o644)
	c, err := OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	checkAll(t, c, tensors)
	if len(c.shards) != len(shards) {
		t.Errorf("%d shards opened, want each of the %d once", len(c.shards), len(shards))
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCheckpointErrors(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	tensors := tinyModel(rng)

	t.Run("no checkpoint", func(t *testing.T) {
		dir := t.TempDir()
		_, err := OpenCheckpoint(dir)
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), dir) {
			t.Errorf("got %v, want ErrNotExist naming %s", err, dir)
		}
	})

	t.Run("missing tensor in shard", func(t *testing.T) {
		dir := t.TempDir()
		if err := WriteShardedCheckpoint(dir, tensors, 1<<20); err != nil {
			t.Fatal(err)
		}
		editIndex(t, dir, func(wm map[string]string) {
			wm["model.layers.2.mlp.up_proj.weight"] = "model-00001-of-00001.safetensors"
		})
		_, err := OpenCheckpoint(dir)
		if !errors.Is(err, ErrMissingTensor) || !strings.Contains(err.Error(), "model-00001-of-00001.safetensors") ||
			!strings.Contains(err.Error(), "model.layers.2.mlp.up_proj.weight") {
			t.Errorf("got %v, want ErrMissingTensor naming the shard and tensor", err)
		}
	})

	t.Run("shard missing", func(t *testing.T) {
		dir := t.TempDir()
		if err := WriteShardedCheckpoint(dir, tensors, 1<<20); err != nil {
			t.Fatal(err)
		}
		editIndex(t, dir, func(wm map[string]string) { wm["model.norm.weight"] = "model-00002-of-00002.safetensors" })
		if _, err := OpenCheckpoint(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("got %v, want ErrNotExist", err)
		}
	})

	t.Run("shard outside the folder", func(t *testing.T) {
		dir := t.TempDir()
		if err := WriteShardedCheckpoint(dir, tensors, 1<<20); err != nil {
			t.Fatal(err)
		}
		editIndex(t, dir, func(wm map[string]string) { wm["model.norm.weight"] = "../model-00001-of-00001.safetensors" })
		if _, err := OpenCheckpoint(dir); !errors.Is(err, ErrBadHeader) {
			t.Errorf("got %v, want ErrBadHeader", err)
		}
	})

	t.Run("bad index JSON", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, indexFile), []byte(`{"weight_map": [`), 0o644)
		if _, err := OpenCheckpoint(dir); !errors.Is(err, ErrBadHeader) {
			t.Errorf("got %v, want ErrBadHeader", err)
		}
	})

	t.Run("bad shard", func(t *testing.T) {
		dir := t.TempDir()
		if err := WriteShardedCheckpoint(dir, tensors, 1<<20); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "model-00001-of-00001.safetensors")
		b, _ := os.ReadFile(p)
		os.WriteFile(p, b[:len(b)-2], 0o644)
		if _, err := OpenCheckpoint(dir); !errors.Is(err, ErrTruncated) {
			t.Errorf("got %v, want ErrTruncated", err)
		}
	})

	t.Run("Expect", func(t *testing.T) {
		dir := t.TempDir()
		if err := WriteSafetensors(filepath.Join(dir, "model.safetensors"), tensors, nil); err != nil {
			t.Fatal(err)
		}
		c, err := OpenCheckpoint(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, err = c.Expect("model.embed_tokens.weight", 8, 32)
		if !errors.Is(err, ErrShapeMismatch) {
			t.Fatalf("transposed shape: %v, want ErrShapeMismatch", err)
		}
		for _, s := range []string{"model.safetensors", "model.embed_tokens.weight", "[32 8]", "[8 32]"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q does not mention %s", err, s)
			}
		}
		if _, err := c.Expect("model.norm.weight", 1, 8); !errors.Is(err, ErrShapeMismatch) {
			t.Errorf("extra dimension: %v, want ErrShapeMismatch", err)
		}
		if _, err := c.Expect("model.layers.9.mlp.up_proj.weight", 8, 8); !errors.Is(err, ErrMissingTensor) {
			t.Errorf("absent tensor: %v, want ErrMissingTensor", err)
		}
		if _, ok := c.Info("absent"); ok {
			t.Error("Info of an absent tensor reports ok")
		}
		if _, err := c.Float32("absent"); !errors.Is(err, ErrMissingTensor) {
			t.Errorf("Float32 of an absent tensor: %v, want ErrMissingTensor", err)
		}
	})
}

// editIndex rewrites the weight_map of dir's index file.
func editIndex(t *testing.T, dir string, edit func(map[string]string)) {
	t.Helper()
	p := filepath.Join(dir, indexFile)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var index struct {
		Metadata  map[string]any    `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(b, &index); err != nil {
		t.Fatal(err)
	}
	edit(index.WeightMap)
	b, _ = json.Marshal(index)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
