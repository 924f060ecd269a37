// Package loader reads Hugging Face checkpoints: safetensors weight files (single or
// sharded) and config.json. Every error on bad input wraps one of the sentinel errors
// below (test with errors.Is) and names the file and, where there is one, the tensor or
// field.
package loader

import "errors"

// Safetensors errors.
var (
	// ErrTruncated: the file is shorter than its header says (header or data cut, or a
	// tensor's data_offsets point past the end of the file).
	ErrTruncated = errors.New("truncated file")
	// ErrHeaderTooLarge: the 8-byte header length is beyond MaxHeaderBytes.
	ErrHeaderTooLarge = errors.New("header too large")
	// ErrBadHeader: the JSON header is malformed (not a JSON object, missing or
	// ill-typed fields, negative dimensions or offsets, begin > end).
	ErrBadHeader = errors.New("bad safetensors header")
	// ErrOverlap: two tensors' data ranges share bytes.
	ErrOverlap = errors.New("overlapping tensor data")
	// ErrShapeMismatch: a tensor's shape does not match its data length, or (from
	// Checkpoint.Expect) not the shape the caller wants.
	ErrShapeMismatch = errors.New("shape mismatch")
	// ErrDuplicateName: a tensor name appears twice.
	ErrDuplicateName = errors.New("duplicate tensor name")
	// ErrMissingTensor: a tensor that should be there is not.
	ErrMissingTensor = errors.New("missing tensor")
	// ErrUnsupportedDType: the tensor's dtype is not BF16, F16 or F32.
	ErrUnsupportedDType = errors.New("unsupported dtype")
	// ErrClosed: the file was used after Close.
	ErrClosed = errors.New("file closed")
)

// config.json errors.
var (
	// ErrUnknownArchitecture: architectures[0] is not one lukv implements.
	ErrUnknownArchitecture = errors.New("unknown architecture")
	// ErrMissingField: a required field is absent or null.
	ErrMissingField = errors.New("missing field")
	// ErrBadConfig: values are ill-typed or inconsistent (non-positive sizes, heads not
	// divisible by KV heads, odd head_dim, ...).
	ErrBadConfig = errors.New("bad config")
	// ErrUnsupported: a valid feature lukv does not implement (e.g. a RoPE scaling type).
	ErrUnsupported = errors.New("unsupported")
)
