package models

import (
	"encoding/json"
	"fmt"
	"testing"
)

func TestDbgScratch(t *testing.T) {
	for _, p := range []string{`{"model":{"kind":"seasonal"},"learn":"clip"}`, `{"model":{"kind":"ewma_z"},"learn":"clip"}`} {
		d, _ := New(Spec{Kind: KindTail, Params: json.RawMessage(p)})
		tl := d.(*Tail)
		ts, xs := demoSeries(5000, 3)
		for i := range 3000 {
			d.Update(ts[i], xs[i])
		}
		fmt.Println(p, "u", tl.top[0], "sum/k", tl.sum/float64(len(tl.top)), "n", tl.n)
		for i := 3000; i < 3012; i++ {
			s := d.Update(ts[i], xs[i]+0.5*float64(i-2999))
			fmt.Printf("  %d dev %.2f val %.3f u %.3f\n", i-2999, s.Deviation, s.Value, tl.top[0])
		}
	}
}
