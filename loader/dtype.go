package loader

import "math"

// DType is a safetensors element type, spelled as in the file header.
type DType string

// The element types lukv reads and writes. Any other dtype in a file is an
// ErrUnsupportedDType.
const (
	BF16 DType = "BF16" // bfloat16: the high 16 bits of an IEEE float32
	F16  DType = "F16"  // IEEE 754 binary16
	F32  DType = "F32"  // IEEE 754 binary32
)

// Size is the number of bytes per element, 0 for an unsupported dtype.
func (d DType) Size() int {
	switch d {
	case BF16, F16:
		return 2
	case F32:
		return 4
	}
	return 0
}

// BF16ToFloat32 widens a bfloat16 to float32 exactly: bf16 is the top half of an f32.
func BF16ToFloat32(h uint16) float32 {
	return math.Float32frombits(uint32(h) << 16)
}

// Float32ToBF16 rounds f to the nearest bfloat16, ties to even. Values past the bf16
// range become ±Inf; a NaN stays a NaN (its quiet bit is set so that dropping the low
// mantissa bits cannot turn it into Inf).
func Float32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if f != f {
		return uint16(b>>16) | 0x0040
	}
	// Adding 0x7FFF plus the lowest kept bit rounds half to even; a carry out of the
	// mantissa correctly bumps the exponent (and overflows to Inf).
	b += 0x7FFF + (b>>16)&1
	return uint16(b >> 16)
}

// F16ToFloat32 widens an IEEE binary16 to float32 exactly, including subnormals,
// ±Inf and NaN (the NaN payload is kept in the top mantissa bits).
func F16ToFloat32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1F
	man := uint32(h & 0x3FF)
	switch exp {
	case 0: // zero or subnormal: man * 2^-24, exact in float32
		f := float32(man) * (1.0 / (1 << 24))
		return math.Float32frombits(sign | math.Float32bits(f))
	case 0x1F: // Inf or NaN
		return math.Float32frombits(sign | 0x7F800000 | man<<13)
	}
	// Normal: rebias the exponent from 15 to 127.
	return math.Float32frombits(sign | (exp+127-15)<<23 | man<<13)
}

// Float32ToF16 rounds f to the nearest IEEE binary16, ties to even. Magnitudes from
// 65520 up become ±Inf, tiny values become (signed) zero or a subnormal, and a NaN
// stays a quiet NaN.
func Float32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xFF
	man := b & 0x7FFFFF
	if exp == 0xFF {
		if man != 0 {
			return sign | 0x7E00 | uint16(man>>13)
		}
		return sign | 0x7C00
	}
	e := exp - 127 + 15 // binary16 biased exponent
	if e >= 0x1F {
		return sign | 0x7C00
	}
	if e <= 0 {
		// Result is subnormal (or zero): count units of 2^-24. The float32 value is
		// m * 2^(e-38) with m the 24-bit significand, i.e. m >> (14-e) units.
		if e < -10 {
			return sign // below half the smallest subnormal: rounds to zero
		}
		m := man | 0x800000
		shift := uint(14 - e)
		h := m >> shift
		rem, half := m&(1<<shift-1), uint32(1)<<(shift-1)
		if rem > half || rem == half && h&1 == 1 {
			h++ // may carry into the smallest normal, which is the right encoding
		}
		return sign | uint16(h)
	}
	h := uint32(e)<<10 | man>>13
	rem := man & 0x1FFF
	if rem > 0x1000 || rem == 0x1000 && h&1 == 1 {
		h++ // a carry into the exponent is right, up to and including Inf
	}
	return sign | uint16(h)
}
