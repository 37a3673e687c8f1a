package gpu

import (
	"errors"
	"fmt"
)

// Modes of GPU_MODE.
const (
	ModeAuto   = "auto"   // NVML when a driver is present, else the fake source
	ModeActual = "actual" // NVML, or fail
	ModeMock   = "mock"   // the fake source
)

// FakeSpec sizes the fake source.
type FakeSpec struct {
	Count    int
	Model    string
	MemoryGB float64
}

// Open picks the source for a mode. In auto mode a host without a driver (or a build without
// cgo) falls back to the fake source; note says why, for the log.
func Open(mode string, fake FakeSpec) (src Source, note string, err error) {
	switch mode {
	case ModeMock:
		return NewFake(fake.Count, fake.Model, fake.MemoryGB), "GPU_MODE=mock: simulated GPUs", nil
	case ModeActual, ModeAuto, "":
		src, err := openNVMLLibrary()
		if err == nil {
			return src, "", nil
		}
		if mode == ModeActual {
			return nil, "", fmt.Errorf("GPU_MODE=actual but NVML cannot be used: %w", err)
		}
		if !errors.Is(err, ErrNoNVML) {
			return nil, "", fmt.Errorf("read GPUs through NVML: %w; set GPU_MODE=mock to run without them", err)
		}
		return NewFake(fake.Count, fake.Model, fake.MemoryGB), "no NVML (" + err.Error() + "): simulated GPUs", nil
	default:
		return nil, "", fmt.Errorf("GPU_MODE %q is not auto, actual or mock", mode)
	}
}
