package bench

import (
	"bufio"
	"encoding/json"
	"io"
)

// lineReader decodes JSON lines. A worker's result line holds its
// histograms and timeline, so lines may be long.
type lineReader struct{ sc *bufio.Scanner }

func newLineReader(r io.Reader) *lineReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	return &lineReader{sc: sc}
}

func (l *lineReader) next(v any) error {
	if !l.sc.Scan() {
		if err := l.sc.Err(); err != nil {
			return err
		}
		return io.EOF
	}
	return json.Unmarshal(l.sc.Bytes(), v)
}
