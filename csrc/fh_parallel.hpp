// A small persistent worker pool for the finite-horizon solver: one parallel loop per call,
// the calling thread takes part, and the first exception thrown by any item is rethrown on
// the calling thread (std::exception_ptr).  Threads are created once per pool, so a solve
// with many short epochs does not pay thread start-up on every epoch.
#pragma once

#include <atomic>
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace trim {
namespace fh {

class WorkerPool {
   public:
    // n_threads counts the calling thread; 1 means no extra thread.
    explicit WorkerPool(int n_threads) {
        for (int w = 1; w < n_threads; ++w) threads_.emplace_back([this, w] { loop(w); });
    }
    WorkerPool(const WorkerPool&) = delete;
    WorkerPool& operator=(const WorkerPool&) = delete;
    ~WorkerPool() {
        {
            std::lock_guard<std::mutex> lk(mu_);
            stop_ = true;
        }
        cv_start_.notify_all();
        for (auto& th : threads_) th.join();
    }

    int size() const { return static_cast<int>(threads_.size()) + 1; }

    // Calls f(i, worker) for every i in [0, n), worker in [0, size()).  Items are handed out
    // dynamically.  After an exception the remaining items are skipped and it is rethrown.
    void run(int n, const std::function<void(int, int)>& f) {
        if (n <= 0) return;
        if (threads_.empty() || n == 1) {
            for (int i = 0; i < n; ++i) f(i, 0);
            return;
        }
        {
            std::lock_guard<std::mutex> lk(mu_);
            job_ = &f;
            job_n_ = n;
            next_.store(0);
            active_ = static_cast<int>(threads_.size());
            err_ = nullptr;
            ++generation_;
        }
        cv_start_.notify_all();
        work(0);
        std::unique_lock<std::mutex> lk(mu_);
        cv_done_.wait(lk, [this] { return active_ == 0; });
        job_ = nullptr;
        if (err_) {
            std::exception_ptr e = err_;
            err_ = nullptr;
            std::rethrow_exception(e);
        }
    }

   private:
    void work(int wid) {
        for (;;) {
            int i = next_.fetch_add(1);
            if (i >= job_n_) break;
            try {
                (*job_)(i, wid);
            } catch (...) {
                std::lock_guard<std::mutex> lk(mu_);
                if (!err_) err_ = std::current_exception();
                next_.store(job_n_);
            }
        }
    }
    void loop(int wid) {
        int seen = 0;
        for (;;) {
            {
                std::unique_lock<std::mutex> lk(mu_);
                cv_start_.wait(lk, [&] { return stop_ || generation_ != seen; });
                if (stop_) return;
                seen = generation_;
            }
            work(wid);
            {
                std::lock_guard<std::mutex> lk(mu_);
                if (--active_ == 0) cv_done_.notify_one();
            }
        }
    }

    std::vector<std::thread> threads_;
    std::mutex mu_;
    std::condition_variable cv_start_, cv_done_;
    const std::function<void(int, int)>* job_ = nullptr;
    int job_n_ = 0;
    std::atomic<int> next_{0};
    int generation_ = 0;
    int active_ = 0;
    bool stop_ = false;
    std::exception_ptr err_;
};

}  // namespace fh
}  // namespace trim
