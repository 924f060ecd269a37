package loader

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
)

// File names of a Hugging Face checkpoint folder.
const (
	indexFile  = "model.safetensors.index.json" // sharded: tensor name -> shard file
	singleFile = "model.safetensors"            // unsharded
)

// Checkpoint is a folder's weights: one model.safetensors, or the shards named by
// model.safetensors.index.json, each opened once.
type Checkpoint struct {
	dir    string
	shards []*SafetensorsFile          // every opened file, in name order
	where  map[string]*SafetensorsFile // tensor name -> the file holding it
	names  []string                    // sorted
}

// OpenCheckpoint opens the weights in dir. With an index file, every tensor of its
// weight_map must be in the shard it names (else ErrMissingTensor); tensors of a shard
// that the index does not list are ignored.
func OpenCheckpoint(dir string) (*Checkpoint, error) {
	c := &Checkpoint{dir: dir, where: map[string]*SafetensorsFile{}}
	indexPath := filepath.Join(dir, indexFile)
	js, err := os.ReadFile(indexPath)
	switch {
	case err == nil:
		if err := c.openSharded(indexPath, js); err != nil {
			c.Close()
			return nil, err
		}
	case errors.Is(err, fs.ErrNotExist):
		path := filepath.Join(dir, singleFile)
		f, err := OpenSafetensors(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: no checkpoint: neither %s nor %s exists: %w", dir, indexFile, singleFile, fs.ErrNotExist)
		}
		if err != nil {
			return nil, err
		}
		c.shards = []*SafetensorsFile{f}
		for _, name := range f.Names() {
			c.where[name] = f
		}
	default:
		return nil, err
	}
	for name := range c.where {
		c.names = append(c.names, name)
	}
	sort.Strings(c.names)
	return c, nil
}

// openSharded reads the index's weight_map and opens each shard it names once.
func (c *Checkpoint) openSharded(indexPath string, js []byte) error {
	var index struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(js, &index); err != nil {
		return fmt.Errorf("%s: %w: %v", indexPath, ErrBadHeader, err)
	}
	if len(index.WeightMap) == 0 {
		return fmt.Errorf("%s: %w: no weight_map", indexPath, ErrBadHeader)
	}
	// Open shards in name order so errors are deterministic.
	var files []string
	for _, file := range index.WeightMap {
		if !slices.Contains(files, file) {
			files = append(files, file)
		}
	}
	sort.Strings(files)
	opened := map[string]*SafetensorsFile{}
	for _, file := range files {
		// A shard must be a file inside dir, not a path out of it.
		if !filepath.IsLocal(file) || filepath.Base(file) != file {
			return fmt.Errorf("%s: %w: shard %q is not a file name in the checkpoint folder", indexPath, ErrBadHeader, file)
		}
		f, err := OpenSafetensors(filepath.Join(c.dir, file))
		if err != nil {
			return err
		}
		c.shards = append(c.shards, f)
		opened[file] = f
	}
	for name, file := range index.WeightMap {
		f := opened[file]
		if _, ok := f.Info(name); !ok {
			return fmt.Errorf("%s: tensor %q: %w (listed in %s)", f.Path(), name, ErrMissingTensor, indexFile)
		}
		c.where[name] = f
	}
	return nil
}

// Names lists every tensor of the checkpoint, sorted.
func (c *Checkpoint) Names() []string { return slices.Clone(c.names) }

// Info describes the named tensor; its Offset is within its own shard file.
func (c *Checkpoint) Info(name string) (TensorInfo, bool) {
	f, ok := c.where[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.Info(name)
}

// file finds the file holding name.
func (c *Checkpoint) file(name string) (*SafetensorsFile, error) {
	f, ok := c.where[name]
	if !ok {
		return nil, fmt.Errorf("%s: tensor %q: %w", c.dir, name, ErrMissingTensor)
	}
	return f, nil
}

// Raw returns the tensor's bytes as a slice of its mapped shard (see
// SafetensorsFile.Raw).
func (c *Checkpoint) Raw(name string) ([]byte, error) {
	f, err := c.file(name)
	if err != nil {
		return nil, err
	}
	return f.Raw(name)
}

// Float32 converts the named tensor to a fresh []float32.
func (c *Checkpoint) Float32(name string) ([]float32, error) {
	f, err := c.file(name)
	if err != nil {
		return nil, err
	}
	return f.Float32(name)
}

// Expect returns the named tensor as float32 after checking it exists
// (ErrMissingTensor) and has exactly the given shape (ErrShapeMismatch).
func (c *Checkpoint) Expect(name string, shape ...int) ([]float32, error) {
	f, err := c.file(name)
	if err != nil {
		return nil, err
	}
	info, _ := f.Info(name)
	if !slices.Equal(info.Shape, shape) {
		return nil, fmt.Errorf("%s: tensor %q: %w: got %v, want %v", f.Path(), name, ErrShapeMismatch, info.Shape, shape)
	}
	return f.Float32(name)
}

// Close unmaps every shard.
func (c *Checkpoint) Close() error {
	var errs []error
	for _, f := range c.shards {
		errs = append(errs, f.Close())
	}
	c.shards, c.where, c.names = nil, map[string]*SafetensorsFile{}, nil
	return errors.Join(errs...)
}
