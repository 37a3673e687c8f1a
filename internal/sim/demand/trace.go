package demand

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand"
	"sort"
	"time"
)

// arrival is one job of the trace.
type arrival struct {
	at      time.Duration // since the start
	service string
	models  []string
	run     time.Duration
}

// model is one model of the trace, with its content (the file the local server serves).
type model struct {
	name, kind string
	body       []byte
	sum        string
}

// trace is the scenario: two services with their own models, popularity following a Zipf
// law within each, all jobs for the first service until halfway and for the second after.
type trace struct {
	jobs   []arrival
	models map[string]model
	total  int64 // bytes of every model
}

const (
	serviceA = "sdxl" // the service jobs want first
	serviceB = "flux" // the service demand shifts to halfway
)

func newTrace(o Options) trace {
	rng := rand.New(rand.NewSource(o.Seed))
	tr := trace{models: map[string]model{}}
	type pool struct{ ckpts, loras []string }
	pools := map[string]pool{}
	for _, svc := range []string{serviceA, serviceB} {
		var p pool
		for i := range o.Checkpoints {
			p.ckpts = append(p.ckpts, tr.add(rng, fmt.Sprintf("%s-ckpt-%02d.safetensors", svc, i), "checkpoints", 60_000, 120_000))
		}
		for i := range o.LoRAs {
			p.loras = append(p.loras, tr.add(rng, fmt.Sprintf("%s-lora-%02d.safetensors", svc, i), "loras", 10_000, 30_000))
		}
		pools[svc] = p
	}
	zc := rand.NewZipf(rng, o.ZipfS, 1, uint64(o.Checkpoints-1))
	zl := rand.NewZipf(rng, o.ZipfS, 1, uint64(o.LoRAs-1))
	for at := time.Duration(0); at < o.Duration; {
		at += time.Duration(rng.ExpFloat64() * float64(o.MeanArrival))
		svc := serviceA
		if at >= o.Duration/2 {
			svc = serviceB
		}
		p := pools[svc]
		tr.jobs = append(tr.jobs, arrival{at: at, service: svc,
			models: []string{p.ckpts[zc.Uint64()], p.loras[zl.Uint64()]},
			run:    o.RunTime/2 + time.Duration(rng.Int63n(int64(o.RunTime)))})
	}
	sort.Slice(tr.jobs, func(i, j int) bool { return tr.jobs[i].at < tr.jobs[j].at })
	return tr
}

func (tr *trace) add(rng *rand.Rand, name, kind string, lo, hi int) string {
	b := make([]byte, lo+rng.Intn(hi-lo))
	rng.Read(b)
	sum := sha256.Sum256(b)
	tr.models[name] = model{name: name, kind: kind, body: b, sum: hex.EncodeToString(sum[:])}
	tr.total += int64(len(b))
	return name
}

// payload is the job's ComfyUI workflow, its loaders naming the models.
func (a arrival) payload() string {
	return fmt.Sprintf(`{"workflow":{"4":{"class_type":"CheckpointLoaderSimple","inputs":{"ckpt_name":%q}},`+
		`"5":{"class_type":"LoraLoader","inputs":{"lora_name":%q,"model":["4",0]}},`+
		`"9":{"class_type":"KSampler","inputs":{"model":["5",0],"steps":20}}}}`, a.models[0], a.models[1])
}
