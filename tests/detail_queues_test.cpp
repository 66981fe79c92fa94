// The lock-free structures under the runtime, stressed directly: many
// producers with per-sender sequence checks (nothing lost, duplicated or
// reordered), and a work-stealing deque and a worker's LIFO slot raced by
// thieves (each item taken exactly once). Run under TSan in CI.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <latch>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <otpp/detail/big_blocks.hpp>
#include <otpp/detail/fifo_ring.hpp>
#include <otpp/detail/key_hash.hpp>
#include <otpp/detail/mpsc_queue.hpp>
#include <otpp/detail/node_pool.hpp>
#include <otpp/detail/runtime_core.hpp>
#include <otpp/detail/timer_wheel.hpp>
#include <otpp/detail/work_stealing_deque.hpp>

#include "catch.hpp"

namespace {
struct item : otpp::detail::mpsc_node {
  unsigned sender;
  unsigned seq;
};
// A sender's next item, from the node pool as a message node is.
item* new_item(unsigned sender, unsigned seq) {
  auto* it = ::new (otpp::detail::pool_allocate(sizeof(item))) item{};
  it->sender = sender;
  it->seq = seq;
  return it;
}
}  // namespace

TEST_CASE("mpsc_queue: 8 producers, per-sender order, nothing lost or duplicated") {
  constexpr unsigned producers = 8;
  constexpr unsigned per = 50'000;
  otpp::detail::mpsc_queue q;
  otpp::detail::mpsc_node* head = q.consumer_head();
  std::latch start{producers + 1};
  std::vector<std::thread> ts;
  for (unsigned p = 0; p < producers; ++p) {
    ts.emplace_back([&, p] {
      start.arrive_and_wait();
      for (unsigned i = 0; i < per; ++i) q.push(new_item(p, i));
    });
  }
  start.arrive_and_wait();
  std::vector<unsigned> next(producers, 0);
  unsigned received = 0;
  bool ordered = true;
  while (received < producers * per) {
    auto* n = static_cast<item*>(q.pop(head));
    if (!n) {
      std::this_thread::yield();
      continue;
    }
    if (n->seq != next[n->sender]) ordered = false;
    next[n->sender] = n->seq + 1;
    ++received;
    otpp::detail::pool_deallocate(n, sizeof(item));
  }
  for (auto& t : ts) t.join();
  CHECK(ordered);
  CHECK(q.pop(head) == nullptr);
  CHECK(q.empty(head));
  CHECK(q.empty_after_release());
  for (unsigned p = 0; p < producers; ++p) CHECK(next[p] == per);
}

// A process's mailbox: the queue carries the consumer's run right. Whoever
// holds it consumes until the queue is empty, then gives it up; the push
// that finds it given up (or a take_idle) takes it. Two nodes the consumer
// owns are posted one at a time, as a process's resume nodes, and may stay
// in the queue as its dummy.
TEST_CASE("mpsc_queue with the run right: one holder at a time, nothing lost or reordered, owned nodes taken in place") {
  using otpp::detail::mpsc_node;
  using otpp::detail::mpsc_queue;
  constexpr unsigned producers = 4;
  constexpr unsigned per = 30'000;
  mpsc_queue q;
  item owned[2];
  auto is_owned = [&](const mpsc_node* n) { return n == &owned[0] || n == &owned[1]; };
  // The consumer's state: touched only by the holder of the right.
  mpsc_node* cursor = q.consumer_head();
  std::vector<unsigned> next(producers, 0);
  unsigned received = 0;
  unsigned resumes = 0;
  unsigned asked = 0;
  bool waiting = false;  // a resume asked for and not yet taken
  bool ordered = true;
  bool resumed_in_order = true;
  std::atomic<item*> to_post{nullptr};
  std::atomic<unsigned> posted{0};
  std::atomic<int> holders{0};
  std::atomic<unsigned> overlaps{0};
  std::atomic<unsigned> idle_marks{0};
  std::atomic<bool> producers_done{false};

  auto consume = [&] {
    if (holders.fetch_add(1, std::memory_order_relaxed) != 0) overlaps.fetch_add(1, std::memory_order_relaxed);
    for (;;) {
      while (mpsc_node* n = q.pop(cursor, is_owned)) {
        if (is_owned(n)) {
          if (!waiting) resumed_in_order = false;
          waiting = false;
          ++resumes;
          continue;
        }
        auto* it = static_cast<item*>(n);
        if (it->seq != next[it->sender]) ordered = false;
        next[it->sender] = it->seq + 1;
        ++received;
        otpp::detail::pool_deallocate(it, sizeof(item));
      }
      if (!q.empty(cursor)) continue;  // a push half done
      // Now and then wait for a resume, as a handler that awaits: the
      // owned node that is not the queue's dummy.
      if (!waiting && received % 97 == 0) {
        waiting = true;
        ++asked;
        to_post.store(mpsc_queue::at(cursor) == &owned[0] ? &owned[1] : &owned[0], std::memory_order_release);
      }
      holders.fetch_sub(1, std::memory_order_relaxed);
      if (q.mark_idle(cursor)) {
        idle_marks.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      if (holders.fetch_add(1, std::memory_order_relaxed) != 0) overlaps.fetch_add(1, std::memory_order_relaxed);
    }
  };

  std::latch start{producers + 3};
  std::vector<std::thread> ts;
  for (unsigned p = 0; p < producers; ++p) {
    ts.emplace_back([&, p] {
      start.arrive_and_wait();
      for (unsigned i = 0; i < per; ++i)
        if (q.push(new_item(p, i))) consume();
    });
  }
  std::thread poster{[&] {  // ends waits, as a reply does
    start.arrive_and_wait();
    while (!producers_done.load(std::memory_order_acquire)) {
      if (item* r = to_post.exchange(nullptr, std::memory_order_acq_rel)) {
        posted.fetch_add(1, std::memory_order_relaxed);
        if (q.push(r)) consume();
      } else {
        std::this_thread::yield();
      }
    }
  }};
  std::thread signaller{[&] {  // takes the right without a message, as a signal's sender does
    start.arrive_and_wait();
    while (!producers_done.load(std::memory_order_acquire)) {
      if (q.take_idle()) consume();
      std::this_thread::yield();
    }
  }};
  // The queue is born held (as a process by its starter): give it up.
  consume();
  start.arrive_and_wait();
  for (auto& t : ts) t.join();
  producers_done.store(true, std::memory_order_release);
  poster.join();
  signaller.join();
  REQUIRE(q.idle());
  REQUIRE(q.take_idle());  // ours now: its state is safe to read
  CHECK(overlaps.load() == 0);
  CHECK(ordered);
  CHECK(received == producers * per);
  for (unsigned p = 0; p < producers; ++p) CHECK(next[p] == per);
  CHECK(resumed_in_order);
  CHECK(resumes == posted.load());
  CHECK(asked >= posted.load());
  CHECK(idle_marks.load() > 1);
  CHECK(q.pop(cursor, is_owned) == nullptr);
  CHECK(q.empty(cursor));
}

TEST_CASE("work_stealing_deque: owner and thieves take every item exactly once") {
  constexpr int items = 200'000;
  constexpr int thieves = 3;
  otpp::detail::work_stealing_deque<int*> dq{4};  // tiny: exercises growth
  std::vector<int> storage(items);
  std::vector<std::atomic<int>> taken(items);
  std::atomic<bool> done{false};
  std::atomic<int> total{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < thieves; ++t) {
    ts.emplace_back([&] {
      while (!done.load(std::memory_order_acquire) || !dq.empty()) {
        if (int* p = dq.steal()) {
          taken[p - storage.data()].fetch_add(1);
          total.fetch_add(1);
        }
      }
    });
  }
  for (int i = 0; i < items; ++i) {
    if (!dq.push(&storage[i])) FAIL("no memory to grow the deque");
    if (i % 3 == 0) {
      if (int* p = dq.pop()) {
        taken[p - storage.data()].fetch_add(1);
        total.fetch_add(1);
      }
    }
  }
  while (int* p = dq.pop()) {
    taken[p - storage.data()].fetch_add(1);
    total.fetch_add(1);
  }
  done.store(true, std::memory_order_release);
  for (auto& t : ts) t.join();
  CHECK(total.load() == items);
  CHECK(std::all_of(taken.begin(), taken.end(), [](auto& a) { return a.load() == 1; }));
}

// The owner fills and empties its LIFO slot and next fiber with plain
// stores while takers take from both (what an idle worker does to a stalled
// one): every token must come out exactly once, to the owner or a taker.
TEST_CASE("worker slot: owner and takers take every LIFO process and next fiber exactly once") {
  // Each taking is a membarrier (12 us here), which interrupts the owner:
  // a taker that bids without pause keeps the owner waiting on nearly
  // every access. So a taker bids once per few owner steps (counted, not
  // timed), and its bids still fall in the middle of the owner's accesses;
  // and the owner waits at every thousandth step for a bid since the last,
  // so that takers started late or descheduled still bid all along.
  constexpr int items = 100'000;
  constexpr int takers = 2;
  otpp::detail::worker_slot slot{0};
  struct alignas(16) token {
    unsigned char bytes[16];
  };
  std::vector<token> processes(items), fibers(items);
  auto process = [&](int i) { return reinterpret_cast<otpp::detail::process_base*>(&processes[i]); };
  auto fib = [&](int i) { return reinterpret_cast<otpp::detail::fiber*>(&fibers[i]); };
  std::vector<std::atomic<int>> got_process(items), got_fiber(items);
  auto count = [&](otpp::detail::process_base* p, otpp::detail::fiber* f) {
    if (p != nullptr) got_process[reinterpret_cast<token*>(p) - processes.data()].fetch_add(1);
    if (f != nullptr) got_fiber[reinterpret_cast<token*>(f) - fibers.data()].fetch_add(1);
  };
  std::atomic<bool> done{false};
  std::atomic<int> step{0};
  std::atomic<int> bids{0};
  std::atomic<int> taken_by_takers{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < takers; ++t) {
    ts.emplace_back([&] {
      for (int seen = 0; !done.load(std::memory_order_acquire);) {
        if (step.load(std::memory_order_relaxed) < seen + 16) {
          std::this_thread::yield();
          continue;
        }
        seen = step.load(std::memory_order_relaxed);
        const auto took = slot.take_from_owner();
        count(took.process, took.fib);
        if (took.process != nullptr || took.fib != nullptr) taken_by_takers.fetch_add(1);
        bids.fetch_add(1);
      }
    });
  }
  for (int i = 0, bids_then = 0; i < items; ++i) {
    count(slot.put_lifo(process(i)), nullptr);
    count(nullptr, slot.swap_next_fiber(fib(i)));
    if (i % 3 == 0) count(slot.take_lifo(), nullptr);
    if (i % 5 == 0 && slot.take_lifo_if(process(i))) count(process(i), nullptr);
    if (i % 2 == 0) count(nullptr, slot.swap_next_fiber(nullptr));
    step.store(i, std::memory_order_relaxed);
    if (i % 1000 == 999) {
      while (bids.load() == bids_then) std::this_thread::yield();
      bids_then = bids.load();
    }
  }
  done.store(true, std::memory_order_release);
  for (auto& t : ts) t.join();
  count(slot.take_lifo(), slot.swap_next_fiber(nullptr));
  CHECK(std::all_of(got_process.begin(), got_process.end(), [](auto& a) { return a.load() == 1; }));
  CHECK(std::all_of(got_fiber.begin(), got_fiber.end(), [](auto& a) { return a.load() == 1; }));
  // Takers take only where the barrier they need is to be had, and again
  // once the owner has seen their last taking.
  if (otpp::detail::membarrier_ready()) CHECK(taken_by_takers.load() > 1);
}

TEST_CASE("fifo_ring: first in, first out across wrap-arounds and growth") {
  otpp::detail::fifo_ring<int*> q{4};
  std::vector<int> storage(1000);
  int next_in = 0;
  int next_out = 0;
  // Pushes run ahead of pops by a lead that grows past each capacity, so
  // the ring wraps with items in it and then doubles with its head mid-way.
  for (int lead = 1; lead <= 300; lead += 7) {
    while (next_in - next_out < lead && next_in < 1000) REQUIRE(q.push(&storage[next_in++]));
    for (int k = 0; k < lead / 2 && next_out < next_in; ++k) {
      REQUIRE(q.pop() == &storage[next_out]);
      ++next_out;
    }
    REQUIRE(q.size() == static_cast<std::size_t>(next_in - next_out));
  }
  while (int* p = q.pop()) {
    REQUIRE(p == &storage[next_out]);
    ++next_out;
  }
  CHECK(next_out == next_in);
  CHECK(q.empty());
}

TEST_CASE("node pool: blocks allocated on one thread and freed on another are reused") {
  constexpr int rounds = 20'000;
  std::vector<void*> blocks(rounds);
  std::thread producer{[&] {
    for (int i = 0; i < rounds; ++i) {
      blocks[i] = otpp::detail::pool_allocate(48);
      static_cast<char*>(blocks[i])[47] = 1;
    }
  }};
  producer.join();
  std::thread consumer{[&] {
    for (int i = 0; i < rounds; ++i) otpp::detail::pool_deallocate(blocks[i], 48);
  }};
  consumer.join();
  // Both threads have exited and flushed their caches: a new allocation of the
  // same class comes from the returned blocks, and sizes never mix classes.
  void* a = otpp::detail::pool_allocate(48);
  void* b = otpp::detail::pool_allocate(40);  // same 48-byte class
  CHECK(a != b);
  otpp::detail::pool_deallocate(a, 48);
  otpp::detail::pool_deallocate(b, 40);
  void* big = otpp::detail::pool_allocate(4096);  // beyond the pool: operator new
  otpp::detail::pool_deallocate(big, 4096);
}

TEST_CASE("timing wheel: every entry comes due exactly at its tick", "[detail][timer]") {
  using otpp::detail::timer_wheel;
  using otpp::detail::wheel_entry;
  struct entry : wheel_entry {
    std::uint64_t when = 0;
  };
  auto when_of = [](const wheel_entry* e) { return static_cast<const entry*>(e)->when; };
  std::mt19937_64 rng{11};
  timer_wheel w;
  std::vector<std::unique_ptr<entry>> entries;
  std::vector<wheel_entry*> live;
  std::size_t wrong = 0, fired = 0;
  std::uint64_t now = 0;
  for (int round = 0; round < 2000; ++round) {
    // Insert a few with spans across every level, remove a few, advance.
    for (int k = 0; k < 8; ++k) {
      auto e = std::make_unique<entry>();
      const int level = static_cast<int>(rng() % 7);
      const std::uint64_t range = std::uint64_t{1} << (6 * level + 1);
      e->when = now + 1 + rng() % range;
      w.insert(e.get(), e->when);
      live.push_back(e.get());
      entries.push_back(std::move(e));
    }
    if (!live.empty() && rng() % 2 == 0) {
      const std::size_t i = rng() % live.size();
      if (live[i]->in_wheel()) w.remove(live[i]);
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
    }
    const std::uint64_t step = (rng() % 4 == 0) ? rng() % 100000 : rng() % 70;
    now += step;
    w.advance(now, when_of, [&](wheel_entry* e) {
      ++fired;
      if (when_of(e) > now) ++wrong;  // early
      auto it = std::find(live.begin(), live.end(), e);
      if (it == live.end()) {
        ++wrong;  // removed or fired twice
      } else {
        live.erase(it);
      }
    });
    // Nothing still live may be overdue.
    for (wheel_entry* e : live)
      if (when_of(e) <= now) ++wrong;
    if (auto next = w.next_due()) {
      if (*next <= now) ++wrong;
    }
  }
  CHECK(wrong == 0);
  CHECK(fired > 1000);
  CHECK(w.size() == live.size());
  w.clear([&](wheel_entry*) {});
  CHECK(w.empty());
}

TEST_CASE("big_blocks: 4 threads take and give back blocks of every size; no two live blocks overlap") {
  // Each block carries its owner's tag and a number at both ends and in
  // the middle: a block handed out twice, or split wrongly, is overwritten
  // by its other owner and fails the check when given back.
  using otpp::detail::big_blocks;
  constexpr unsigned threads = 4;
  constexpr int rounds = 3000;
  std::atomic<int> bad{0};
  std::atomic<std::size_t> peak_regions{0};
  std::latch start{threads};
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      struct held {
        char* p;
        std::size_t bytes;
        std::uint64_t tag;
      };
      auto mark = [](char* p, std::size_t bytes, std::uint64_t tag) {
        for (std::size_t at : {std::size_t{0}, bytes / 2, bytes - sizeof tag}) std::memcpy(p + at, &tag, sizeof tag);
      };
      auto intact = [](const held& h) {
        for (std::size_t at : {std::size_t{0}, h.bytes / 2, h.bytes - sizeof h.tag}) {
          std::uint64_t seen = 0;
          std::memcpy(&seen, h.p + at, sizeof seen);
          if (seen != h.tag) return false;
        }
        return true;
      };
      std::mt19937 rng{t + 1};
      std::vector<held> live;
      start.arrive_and_wait();
      for (int n = 0; n < rounds; ++n) {
        if (live.size() < 24 && (live.empty() || rng() % 2 == 0)) {
          const std::size_t bytes = big_blocks::min_block << (rng() % 7);  // 64 KiB .. 4 MiB
          auto* p = static_cast<char*>(big_blocks::allocate(bytes));
          const std::size_t align = std::min(bytes, otpp::detail::huge_page_bytes);
          if (reinterpret_cast<std::uintptr_t>(p) % align != 0) bad.fetch_add(1);
          const std::uint64_t tag = (std::uint64_t{t} << 32) | static_cast<std::uint64_t>(n);
          mark(p, bytes, tag);
          live.push_back({p, bytes, tag});
          const std::size_t now = big_blocks::regions_held().regions;
          for (std::size_t was = peak_regions.load(); now > was && !peak_regions.compare_exchange_weak(was, now);) {
          }
        } else {
          const std::size_t i = rng() % live.size();
          if (!intact(live[i])) bad.fetch_add(1);
          big_blocks::deallocate(live[i].p, live[i].bytes);
          live[i] = live.back();
          live.pop_back();
        }
      }
      for (const held& h : live) {
        if (!intact(h)) bad.fetch_add(1);
        big_blocks::deallocate(h.p, h.bytes);
      }
    });
  }
  for (auto& th : ts) th.join();
  CHECK(bad.load() == 0);
  CHECK(peak_regions.load() > 8);  // more than are kept empty: some went back
  // Every block came back and merged with its buddies: each region left is
  // wholly free.
  const auto left = big_blocks::regions_held();
  CHECK(left.regions == left.empty);
  CHECK(left.regions <= 8);
}

TEST_CASE("table keys: strings of every length to 40 are equal only byte for byte, and equal strings hash alike") {
  // bytes_equal reads short strings a word at a time from both ends; a
  // difference at any position of any length must be seen. Through a table
  // this path is taken only on a rare 7-bit hash match, hence here.
  const otpp::detail::key_equal<std::string> eq;
  const otpp::detail::key_hash<std::string> hash;
  for (std::size_t len = 0; len <= 40; ++len) {
    const std::string a(len, 'a');
    const std::string same = std::string{a.data(), len};  // other memory
    REQUIRE(eq(a, same));
    REQUIRE(hash(a) == hash(same));
    REQUIRE_FALSE(eq(a, std::string(len + 1, 'a')));
    for (std::size_t at = 0; at < len; ++at) {
      for (char c : {'b', '\0'}) {
        std::string b = a;
        b[at] = c;
        REQUIRE_FALSE(eq(a, b));
        REQUIRE_FALSE(eq(b, a));
        REQUIRE(hash(a) != hash(b));  // one byte apart: these 64-bit hashes differ
      }
    }
  }
}

namespace {
// A block's contents while a sender owns it: who, which, and a pattern over
// the rest; a block handed out twice at once would have them overwritten.
struct stamped {
  unsigned sender;
  unsigned seq;
  std::size_t size;
};
void stamp(void* p, std::size_t size, unsigned sender, unsigned seq) {
  auto* b = static_cast<unsigned char*>(p);
  std::memset(b, static_cast<int>(0x40 + sender), size);
  std::memcpy(b, &sender, sizeof sender);
  std::memcpy(b + 4, &seq, sizeof seq);
}
bool intact(const void* p, std::size_t size, unsigned sender, unsigned seq) {
  const auto* b = static_cast<const unsigned char*>(p);
  unsigned s = 0, q = 0;
  std::memcpy(&s, b, sizeof s);
  std::memcpy(&q, b + 4, sizeof q);
  if (s != sender || q != seq) return false;
  for (std::size_t i = 8; i < size; ++i)
    if (b[i] != static_cast<unsigned char>(0x40 + sender)) return false;
  return true;
}
struct envelope : otpp::detail::mpsc_node {
  void* block;
  std::size_t size;
  unsigned sender;
  unsigned seq;
};
}  // namespace

TEST_CASE("node pool: blocks that senders allocate and a consumer frees come back to the senders in batches, "
          "each handed out once at a time, nothing lost") {
  // Each sender's blocks cycle: allocated and stamped here, checked and
  // freed by the consumer, whose frees go back to the central pool in
  // batches that the senders take again (as arrays, handed out from the
  // end). Two sizes, so two classes cycle at once.
  constexpr unsigned senders = 3;
  constexpr unsigned per = 60'000;
  constexpr std::size_t sizes[] = {48, 112};
  otpp::detail::mpsc_queue q;
  otpp::detail::mpsc_node* head = q.consumer_head();
  std::latch start{senders + 1};
  std::vector<std::thread> ts;
  for (unsigned p = 0; p < senders; ++p) {
    ts.emplace_back([&, p] {
      start.arrive_and_wait();
      for (unsigned i = 0; i < per; ++i) {
        const std::size_t size = sizes[(i + p) % 2];
        void* block = otpp::detail::pool_allocate(size);
        stamp(block, size, p, i);
        auto* e = ::new (otpp::detail::pool_allocate(sizeof(envelope))) envelope{};
        e->block = block;
        e->size = size;
        e->sender = p;
        e->seq = i;
        q.push(e);
      }
    });
  }
  start.arrive_and_wait();
  std::vector<unsigned> next(senders, 0);
  unsigned received = 0, broken = 0, reordered = 0;
  while (received < senders * per) {
    auto* e = static_cast<envelope*>(q.pop(head));
    if (e == nullptr) {
      std::this_thread::yield();
      continue;
    }
    if (e->seq != next[e->sender]) ++reordered;
    next[e->sender] = e->seq + 1;
    if (!intact(e->block, e->size, e->sender, e->seq)) ++broken;
    std::memset(e->block, 0xdd, e->size);  // freed: no sender's stamp survives in it
    otpp::detail::pool_deallocate(e->block, e->size);
    e->~envelope();
    otpp::detail::pool_deallocate(e, sizeof(envelope));
    ++received;
  }
  for (auto& t : ts) t.join();
  CHECK(broken == 0);
  CHECK(reordered == 0);
  for (unsigned p = 0; p < senders; ++p) CHECK(next[p] == per);
}

TEST_CASE("node pool: after a spike freed on another thread, the fully free slabs go back to the system; the pool "
          "serves on") {
  if constexpr (otpp::detail::address_sanitizer) {
    WARN("under AddressSanitizer every block comes from operator new: no slabs to give back");
    return;
  }
  auto& central = otpp::detail::central_pool::instance();
  constexpr int spike = 100'000;
  constexpr std::size_t size = 80;  // a class no other test here uses
  std::vector<void*> blocks(spike);
  std::thread{[&] {
    for (auto& b : blocks) {
      b = otpp::detail::pool_allocate(size);
      std::memset(b, 0x5a, size);
    }
  }}.join();
  const std::size_t slabs_before = central.slab_bytes();
  // Freed on a thread that ends: its frees reach the central pool as
  // batches with arrays, and its cache is flushed when it ends.
  std::thread{[&] {
    for (void* b : blocks) otpp::detail::pool_deallocate(b, size);
  }}.join();
  CHECK(central.free_bytes() >= spike * size);
  const std::size_t released = central.release_free_slabs();
  CHECK(released > 0);
  CHECK(central.slab_bytes() == slabs_before - released);
  // What stayed is still sound: a thread takes and gives back blocks of
  // the class again, each one distinct and writable.
  std::thread{[&] {
    std::vector<void*> again(4096);
    for (auto& b : again) {
      b = otpp::detail::pool_allocate(size);
      std::memset(b, 0x33, size);
    }
    std::sort(again.begin(), again.end());
    CHECK(std::adjacent_find(again.begin(), again.end()) == again.end());
    for (void* b : again) otpp::detail::pool_deallocate(b, size);
    otpp::detail::pool_trim();  // hands back the rest of what it took, too
  }}.join();
}
