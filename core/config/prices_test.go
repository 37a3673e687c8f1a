package config_test

import (
	"strings"
	"testing"
)

func TestPricesForJobCosts(t *testing.T) {
	c, err := load(map[string]string{"MACHINE_GPU_HOUR_PRICE": "2.49", "MACHINE_KWH_PRICE": "0.12"})
	if err != nil || c.GPUHourPrice != 2.49 || c.KWhPrice != 0.12 {
		t.Fatalf("prices = %v, %v (%v)", c.GPUHourPrice, c.KWhPrice, err)
	}
	if c, _ := load(nil); c.GPUHourPrice != 0 || c.KWhPrice != 0 {
		t.Errorf("prices without the variables = %v, %v; want unset", c.GPUHourPrice, c.KWhPrice)
	}
	for _, bad := range []string{"abc", "-1", "NaN", "Inf"} {
		_, err := load(map[string]string{"MACHINE_GPU_HOUR_PRICE": bad, "MACHINE_KWH_PRICE": bad})
		if err == nil || !strings.Contains(err.Error(), "MACHINE_GPU_HOUR_PRICE") || !strings.Contains(err.Error(), "MACHINE_KWH_PRICE") {
			t.Errorf("prices %q: %v; want both variables named as problems", bad, err)
		}
	}
}
