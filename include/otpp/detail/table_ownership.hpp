#pragma once
// Who holds a table, for otpp::table: the untyped part of every table (name,
// access, owner, heir), the directory of named tables, and the hand-over
// when the owner exits (to the heir, or deletion) or gives the table away.
// Nothing here knows the objects' types.

#include <any>
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "../table_options.hpp"
#include "links.hpp"
#include "process_base.hpp"

namespace otpp::detail {

/// The untyped part of a table: its identity, owner and heir.
struct table_meta : std::enable_shared_from_this<table_meta> {
  table_meta(table_options&& o, const char* k, const void* type)
      : name{std::move(o.name)}, access{o.access}, kind{k}, type_tag{type}, heir{std::move(o.heir)}, heir_data{std::move(o.heir_data)} {}
  virtual ~table_meta() = default;
  table_meta(const table_meta&) = delete;
  table_meta& operator=(const table_meta&) = delete;

  /// The owner gone without an heir (or delete_table): the objects go.
  virtual void drop_objects() noexcept = 0;
  /// The typed table_transfer message, not yet sent. Throws
  /// std::bad_alloc before it takes `data`, which is then untouched.
  virtual message_node* make_transfer(const pid& from, std::any& data) = 0;

  const std::string name;
  const table_access access;
  const char* const kind;
  const void* const type_tag;  // the typed table, for named()
  std::atomic<process_base*> owner{nullptr};  // no reference: cleared before the owner's memory can go
  std::atomic<bool> deleted{false};
  std::mutex m;  // owner transitions, heir
  pid owner_pid;
  pid heir;
  std::any heir_data;
};

/// Named tables: one directory for the program, as process names.
class table_names {
 public:
  static table_names& instance() {
    static table_names t;
    return t;
  }
  bool add(const std::string& name, const std::shared_ptr<table_meta>& t) {
    std::lock_guard lock{m_};
    auto [it, fresh] = map_.try_emplace(name, t);
    if (!fresh) {
      if (!it->second.expired()) return false;
      it->second = t;
    }
    return true;
  }
  std::shared_ptr<table_meta> find(std::string_view name) {
    std::lock_guard lock{m_};
    auto it = map_.find(std::string{name});
    return it == map_.end() ? nullptr : it->second.lock();
  }
  void remove(const std::string& name, const table_meta* t) noexcept {
    std::lock_guard lock{m_};
    auto it = map_.find(name);
    if (it == map_.end()) return;
    auto held = it->second.lock();
    if (held == nullptr || held.get() == t) map_.erase(it);
  }

 private:
  std::mutex m_;
  std::unordered_map<std::string, std::weak_ptr<table_meta>> map_;
};

/// Deletes `t`: no more operations, objects freed, name released.
inline void delete_table_now(table_meta& t) noexcept {
  if (t.deleted.exchange(true, std::memory_order_acq_rel)) return;
  {
    std::lock_guard lock{t.m};
    t.owner.store(nullptr, std::memory_order_release);
    t.owner_pid = pid{};
    t.heir = pid{};
    t.heir_data.reset();
  }
  if (!t.name.empty()) table_names::instance().remove(t.name, &t);
  t.drop_objects();
}

void adopt_table(const std::shared_ptr<table_meta>& t, const pid& to, const pid& from, std::any& data);

/// On the owner's exit hooks: the table lives as long as its owner (this
/// holds it), then passes to the heir or is deleted.
struct table_owner_hook final : exit_hook {
  explicit table_owner_hook(std::shared_ptr<table_meta> t) noexcept : table{std::move(t)} {}
  std::shared_ptr<table_meta> table;
  void on_exit(process_base& p) noexcept override {
    pid heir;
    std::any data;
    {
      std::lock_guard lock{table->m};
      if (table->owner.load(std::memory_order_relaxed) != &p) return;  // given away meanwhile
      // The heir stays set (as ETS): a keeper that got the table back and
      // gives it away again gets it back at the next crash too.
      heir = table->heir;
      data = table->heir_data;
    }
    if (heir.alive() && pid_access::get(heir) != &p) {
      // Owed to the heir as an exit signal is to a link: without memory to
      // tell it, the exit waits for some (see make_owed_node).
      for (unsigned refusals = 0;; ++refusals) {
        try {
          adopt_table(table, heir, pid_access::make(&p), data);
          return;
        } catch (...) {  // std::bad_alloc, with nothing changed
          wait_for_owed_memory("table transfer", p.id(), heir.id(), refusals);
        }
      }
    }
    delete_table_now(*table);
  }
  [[nodiscard]] const void* owner_tag() const noexcept override { return table.get(); }
};

/// A signal to the new owner: registers the hook on its own thread (before
/// the transfer message, which queues behind signals), or, if it is dead
/// by then, deletes the table.
struct table_adopt_node final : message_node {
  table_adopt_node(std::shared_ptr<table_meta> t, std::uint64_t giver) noexcept : table{std::move(t)}, from{giver} {
    fn = &handle;
  }
  std::shared_ptr<table_meta> table;
  std::uint64_t from;  // the owner that passed it (for the message if memory never comes)
  static void handle(process_base& p, message_node* n, msg_op op, const exit_reason*) noexcept {
    auto* self = static_cast<table_adopt_node*>(n);
    std::shared_ptr<table_meta> t = std::move(self->table);
    const std::uint64_t from = self->from;
    free_node(self);
    if (op == msg_op::invoke) {
      // Taking the table is owed as passing it was: without memory to
      // record it, wait for some, rather than delete what an heir is
      // there to keep.
      for (unsigned refusals = 0;; ++refusals) {
        try {
          p.cold_state().exit_hooks.push_back(std::make_shared<table_owner_hook>(t));
          return;
        } catch (const std::bad_alloc&) {
          wait_for_owed_memory("table passed", from, p.id(), refusals);
        } catch (...) {
          break;
        }
      }
    }
    delete_table_now(*t);
  }
};

// Both of what `to` is told (the adopt signal, then the transfer message)
// are made before anything changes: on std::bad_alloc nothing has, and
// `data` is untouched.
inline void adopt_table(const std::shared_ptr<table_meta>& t, const pid& to, const pid& from, std::any& data) {
  process_base* p = pid_access::get(to);
  auto* node = make_node<table_adopt_node>(t, from.id());
  message_node* transfer = nullptr;
  try {
    transfer = t->make_transfer(from, data);
  } catch (...) {
    free_node(node);
    throw;
  }
  {
    std::lock_guard lock{t->m};
    t->owner.store(p, std::memory_order_release);
    t->owner_pid = to;
  }
  p->enqueue_signal(node);
  (void)p->offer(transfer, false);  // as otpp::send: a full bounded mailbox drops it
}

}  // namespace otpp::detail
