package control

import (
	"encoding/json"
	"math"
	"reflect"
	"testing"
)

// A history decodes to what encoding/json would give a []float64, and a bad one is an error.
func TestSeriesDecodesLikeAFloatSlice(t *testing.T) {
	for _, in := range []string{`[]`, `null`, `[1]`, `[ 1, -2.5 ,3e2, 0.1 ]`, `[737,737,31,-1,1e-7,12345678.901]`} {
		var want []float64
		if err := json.Unmarshal([]byte(in), &want); err != nil {
			t.Fatal(err)
		}
		var got struct{ H Series }
		if err := json.Unmarshal([]byte(`{"H":`+in+`}`), &got); err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if !reflect.DeepEqual([]float64(got.H), want) {
			t.Errorf("%s: got %#v, want %#v", in, got.H, want)
		}
	}
	for _, in := range []string{`[1,"2"]`, `[1,,2]`, `{"a":1}`, `"1,2"`, `[true]`} {
		var got struct{ H Series }
		if err := json.Unmarshal([]byte(`{"H":`+in+`}`), &got); err == nil {
			t.Errorf("%s decoded to %v", in, got.H)
		}
	}
}

// A snapshot's histories survive the wire.
func TestSnapshotHistoriesRoundTrip(t *testing.T) {
	ring := make(Series, 300)
	for i := range ring {
		ring[i] = math.Round(float64(i*37%1000)*10) / 10
	}
	in := Snapshot{GPUs: []GPU{{History: ring, Detail: GPUDetail{MemHistory: ring, TempHistory: ring[:10], PowerHistory: Series{}}}},
		Services: []Service{{Detail: ServiceDetail{CPUHistory: ring, RSSHistory: nil}}},
		Trends:   Trends{QueueDepth: ring, JobsPerMin: ring[:1], HostCPU: ring}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out Snapshot
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Errorf("histories changed on the wire:\n in %+v\nout %+v", in, out)
	}
}
