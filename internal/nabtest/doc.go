// Package nabtest locates the Numenta Anomaly Benchmark series vigil's tests
// read: $VIGIL_NAB_DIR when set, else the copy in the repository's
// testdata/nab.
package nabtest
