//go:build !cgo

package gpu

import "errors"

// NVMLAvailable is false in builds without cgo: go-nvml needs it.
const NVMLAvailable = false

// ErrNoNVML says NVML cannot be used.
var ErrNoNVML = errors.New("this binary was built without cgo (CGO_ENABLED=0), so it cannot read GPUs through NVML; build with cgo, or set GPU_MODE=mock")

func openNVMLLibrary() (Source, error) { return nil, ErrNoNVML }
