// Data-parallel collectives over MPI, loaded at run time (dlopen of libmpi.so.40), so the core and
// the addon load and run single-process without any MPI installed. Only Open MPI's C ABI is
// supported (MPI handles are the addresses of its exported predefined objects: ompi_mpi_comm_world,
// ompi_mpi_float, ompi_mpi_op_sum, ...); Debian's openmpi-bin/libopenmpi-dev (Open MPI 4.x) is
// what CI uses.
//
// Every collective runs under a watchdog: when it has not completed within the timeout
// (QN_DIST_TIMEOUT_S, default 300 s) a peer rank is dead or hung, and the watchdog prints which
// collective on which rank stalled, names the rank(s) that did not reach it, and calls MPI_Abort,
// which makes mpirun end every rank.
//
// Naming them needs no extra networking nor MPI_THREAD_MULTIPLE: collectives are numbered (every
// rank makes them in the same order; #1 is init's broadcast of a job token from rank 0) and each
// rank rewrites a small heartbeat file, <dir>/rank-<r>, with the number and name of the collective
// it is entering (one pwrite, no fsync). <dir> = $QN_DIST_HEARTBEAT_DIR (else $TMPDIR, else /tmp)
// + /qn-heartbeat-<token>. On a timeout the watchdog reads every rank's file: ranks whose last
// number is below its own never reached the collective ("rank 2 died or hangs: it did not reach
// this collective (the last one it entered was #7 'target count')"); a rank of this node whose
// process is stopped or gone is named too; a rank without a file is named only when nothing else
// explains the wait (on other nodes the files are visible only when the directory is shared).
// Files are removed at finalize (the directory by the last rank); a job that aborted leaves its
// directory until the next job's local rank 0 sweeps directories whose processes are all gone.
// A file error only turns the files off (one warning): the message then says "another rank".
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace qn {
namespace dist {

struct Info {
  bool active = false;  // init() succeeded
  int rank = 0, world_size = 1, local_rank = 0;
  std::string library;  // the libmpi that was loaded
};

// MPI_Init_thread (MPI_THREAD_SERIALIZED). Throws E_NO_DEVICE when libmpi cannot be loaded.
// Idempotent.
const Info& init();
const Info& info();
// In-place sums across all ranks (host memory). Chunked for counts over INT_MAX.
void allreduce_sum_f32(float* data, int64_t n, const char* what);
void allreduce_sum_f64(double* data, int64_t n, const char* what);
// Rank `root`'s bytes to everyone.
void broadcast(void* data, int64_t bytes, int root, const char* what);
void barrier(const char* what);
// MPI_Abort after printing `message` (never returns).
[[noreturn]] void abort_job(const std::string& message, int code);
void finalize();
// Runs fn under the watchdog (a wait that depends on other ranks, e.g. a stream sync after NCCL).
void guarded(const char* what, const std::function<void()>& fn);
// GPU gradients: in-place sum with NCCL on `stream` (a cudaStream_t), loaded at run time
// (cuda/core/dist_nccl.cpp). The device must be current on this thread. Returns false (on every
// rank alike) when NCCL is not usable on all ranks or QN_DIST_NO_NCCL is set: stage through host.
bool nccl_allreduce_sum_f32(float* device_data, int64_t n, void* stream, const char* what);
// Seconds a collective may take before the watchdog aborts the job.
double timeout_seconds();

}  // namespace dist
}  // namespace qn
