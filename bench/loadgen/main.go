// Command loadgen is the benchmark's load generator (stdlib only; built by bench/run.py into a
// temporary directory at run time).
//
// Two modes, each printing one JSON object on stdout:
//
//	-mode rate    open loop: request i leaves at start + i/rate, whatever earlier requests are
//	              doing (up to -max-inflight in flight; a request that would exceed the cap is
//	              counted as "dropped", never queued, so the schedule never bends). Latency is
//	              timed from the moment the request is actually handed to the connection.
//	-mode stream  -n streams one after another over one keep-alive connection: time to first
//	              body byte, total time, events per stream and the gaps between events.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type headerList []string

func (h *headerList) String() string     { return strings.Join(*h, ", ") }
func (h *headerList) Set(v string) error { *h = append(*h, v); return nil }

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// percentile of an ascending slice (nearest rank).
func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	if rank < 0 {
		rank = 0
	}
	if rank >= len(sorted) {
		rank = len(sorted) - 1
	}
	return ms(sorted[rank])
}

func summary(values []time.Duration) map[string]float64 {
	sort.Slice(values, func(i, j int) bool { return values[i] < values[j] })
	out := map[string]float64{"p50": 0, "p90": 0, "p99": 0, "max": 0, "mean": 0}
	if len(values) == 0 {
		return out
	}
	var total time.Duration
	for _, v := range values {
		total += v
	}
	out["p50"] = percentile(values, 50)
	out["p90"] = percentile(values, 90)
	out["p99"] = percentile(values, 99)
	out["max"] = ms(values[len(values)-1])
	out["mean"] = ms(total) / float64(len(values))
	return out
}

func newClient(conns int, timeout time.Duration) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	transport := &http.Transport{
		DialContext:         dialer.DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &http.Client{Transport: transport, Timeout: timeout}
}

// varyMarker, when set (-vary), is replaced in each request's body by varyPrefix and a counter,
// so that every request differs (a response cache sees only misses).
var (
	varyMarker  []byte
	varyPrefix  string
	varyCounter int64
)

func newRequest(url string, body []byte, headers headerList) (*http.Request, error) {
	if len(varyMarker) > 0 {
		n := atomic.AddInt64(&varyCounter, 1)
		body = bytes.Replace(body, varyMarker, []byte(fmt.Sprintf("%s-%d", varyPrefix, n)), 1)
	}
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	for _, h := range headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			return nil, fmt.Errorf("header %q is not 'Name: value'", h)
		}
		req.Header.Set(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	return req, nil
}

type rateResult struct {
	Mode         string             `json:"mode"`
	TargetRate   float64            `json:"target_rate"`
	Duration     float64            `json:"duration_s"`
	Sent         int64              `json:"sent"`
	Completed    int64              `json:"completed"`
	OK           int64              `json:"ok"`
	Errors       int64              `json:"errors"`
	Dropped      int64              `json:"dropped"`
	AchievedRate float64            `json:"achieved_rate"`
	LatencyMs    map[string]float64 `json:"latency_ms"`
	LatenessMs   map[string]float64 `json:"send_lateness_ms"`
	Statuses     map[string]int64   `json:"statuses"`
	FirstError   string             `json:"first_error,omitempty"`
}

func runRate(url string, body []byte, headers headerList, rate float64, duration time.Duration,
	maxInflight int, timeout time.Duration, warmup int) rateResult {
	client := newClient(maxInflight, timeout)
	for i := 0; i < warmup; i++ { // open connections and warm the target's caches
		if req, err := newRequest(url, body, headers); err == nil {
			if resp, err := client.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}
	var (
		mu        sync.Mutex
		latencies []time.Duration
		lateness  []time.Duration
		statuses  = map[string]int64{}
		firstErr  string
		inflight  int64
		sent      int64
		dropped   int64
		completed int64
		okCount   int64
		errCount  int64
		wg        sync.WaitGroup
	)
	total := int(rate * duration.Seconds())
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	for i := 0; i < total; i++ {
		due := start.Add(time.Duration(i) * interval)
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		if atomic.LoadInt64(&inflight) >= int64(maxInflight) {
			atomic.AddInt64(&dropped, 1)
			continue
		}
		atomic.AddInt64(&inflight, 1)
		atomic.AddInt64(&sent, 1)
		wg.Add(1)
		go func(due time.Time) {
			defer wg.Done()
			defer atomic.AddInt64(&inflight, -1)
			req, err := newRequest(url, body, headers)
			var status string
			var latency time.Duration
			sendAt := time.Now()
			if err == nil {
				var resp *http.Response
				resp, err = client.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					latency = time.Since(sendAt)
					status = fmt.Sprint(resp.StatusCode)
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("HTTP %d", resp.StatusCode)
					}
				}
			}
			mu.Lock()
			defer mu.Unlock()
			lateness = append(lateness, sendAt.Sub(due))
			atomic.AddInt64(&completed, 1)
			if status != "" {
				statuses[status]++
			}
			if err != nil {
				atomic.AddInt64(&errCount, 1)
				if firstErr == "" {
					firstErr = err.Error()
				}
				return
			}
			atomic.AddInt64(&okCount, 1)
			latencies = append(latencies, latency)
		}(due)
	}
	elapsed := time.Since(start)
	wg.Wait()
	return rateResult{
		Mode:         "rate",
		TargetRate:   rate,
		Duration:     elapsed.Seconds(),
		Sent:         sent,
		Completed:    completed,
		OK:           okCount,
		Errors:       errCount,
		Dropped:      dropped,
		AchievedRate: float64(okCount) / math.Max(elapsed.Seconds(), 1e-9),
		LatencyMs:    summary(latencies),
		LatenessMs:   summary(lateness),
		Statuses:     statuses,
		FirstError:   firstErr,
	}
}

type streamResult struct {
	Mode         string             `json:"mode"`
	Streams      int                `json:"streams"`
	OK           int                `json:"ok"`
	Errors       int                `json:"errors"`
	TTFBMs       map[string]float64 `json:"ttfb_ms"`
	TotalMs      map[string]float64 `json:"total_ms"`
	AfterFirstMs map[string]float64 `json:"after_first_ms"`
	GapMs        map[string]float64 `json:"gap_ms"`
	EventsMin    int                `json:"events_min"`
	EventsMax    int                `json:"events_max"`
	Bytes        int64              `json:"bytes"`
	FirstError   string             `json:"first_error,omitempty"`
}

func runStreams(url string, body []byte, headers headerList, n int, timeout time.Duration,
	warmup int) streamResult {
	client := newClient(1, timeout)
	res := streamResult{Mode: "stream", Streams: n, EventsMin: math.MaxInt32}
	var ttfbs, totals, afters, gaps []time.Duration
	buf := make([]byte, 64*1024)
	for i := -warmup; i < n; i++ {
		measured := i >= 0
		fail := func(err error) {
			if measured {
				res.Errors++
				if res.FirstError == "" {
					res.FirstError = err.Error()
				}
			}
		}
		req, err := newRequest(url, body, headers)
		if err != nil {
			fail(err)
			continue
		}
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			fail(err)
			continue
		}
		if resp.StatusCode != 200 {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			fail(fmt.Errorf("HTTP %d", resp.StatusCode))
			continue
		}
		var (
			first     time.Time
			last      time.Time
			events    int
			prevEvent time.Time
			tail      []byte // the end of the previous read, to find separators across reads
			streamGap []time.Duration
			nbytes    int64
		)
		for {
			k, rerr := resp.Body.Read(buf)
			if k > 0 {
				now := time.Now()
				if first.IsZero() {
					first = now
				}
				last = now
				nbytes += int64(k)
				data := append(tail, buf[:k]...)
				count := bytes.Count(data, []byte("\n\n"))
				if count > 0 {
					if !prevEvent.IsZero() {
						streamGap = append(streamGap, now.Sub(prevEvent))
					}
					prevEvent = now
					events += count
				}
				// keep only what follows the last separator (bounded)
				if idx := bytes.LastIndex(data, []byte("\n\n")); idx >= 0 {
					data = data[idx+2:]
				}
				if len(data) > 1 {
					data = data[len(data)-1:]
				}
				tail = append([]byte(nil), data...)
			}
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				err = rerr
				break
			}
		}
		resp.Body.Close()
		if err != nil {
			fail(err)
			continue
		}
		if !measured {
			continue
		}
		res.OK++
		res.Bytes += nbytes
		ttfbs = append(ttfbs, first.Sub(start))
		totals = append(totals, last.Sub(start))
		afters = append(afters, last.Sub(first))
		gaps = append(gaps, streamGap...)
		if events < res.EventsMin {
			res.EventsMin = events
		}
		if events > res.EventsMax {
			res.EventsMax = events
		}
	}
	if res.OK == 0 {
		res.EventsMin = 0
	}
	res.TTFBMs = summary(ttfbs)
	res.TotalMs = summary(totals)
	res.AfterFirstMs = summary(afters)
	res.GapMs = summary(gaps)
	return res
}

func main() {
	var headers headerList
	mode := flag.String("mode", "rate", "rate | stream")
	url := flag.String("url", "", "target URL (POST)")
	bodyFile := flag.String("body", "", "file with the request body")
	rate := flag.Float64("rate", 20, "requests per second (rate mode)")
	duration := flag.Duration("duration", 10*time.Second, "how long to send (rate mode)")
	maxInflight := flag.Int("max-inflight", 256, "cap on requests in flight (rate mode)")
	n := flag.Int("n", 20, "streams to measure (stream mode)")
	warmup := flag.Int("warmup", 5, "unmeasured requests first")
	timeout := flag.Duration("timeout", 30*time.Second, "per-request timeout")
	flag.Var(&headers, "H", "extra header 'Name: value' (repeatable)")
	vary := flag.String("vary", "", "replace this marker in the body by a per-request counter")
	flag.StringVar(&varyPrefix, "vary-prefix", "run", "what the counter starts with (-vary)")
	flag.Parse()
	varyMarker = []byte(*vary)
	if *url == "" || *bodyFile == "" {
		fmt.Fprintln(os.Stderr, "loadgen: -url and -body are required")
		os.Exit(2)
	}
	body, err := os.ReadFile(*bodyFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	var out interface{}
	switch *mode {
	case "rate":
		if *rate <= 0 {
			fmt.Fprintln(os.Stderr, "loadgen: -rate must be > 0")
			os.Exit(2)
		}
		out = runRate(*url, body, headers, *rate, *duration, *maxInflight, *timeout, *warmup)
	case "stream":
		out = runStreams(*url, body, headers, *n, *timeout, *warmup)
	default:
		fmt.Fprintln(os.Stderr, "loadgen: -mode must be rate or stream")
		os.Exit(2)
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}
