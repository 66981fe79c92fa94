#pragma once
// What a table is made with: who may use it (table_access) and how it is
// made (table_options, ETS's options to ets:new).

#include <any>
#include <optional>
#include <string>

#include "pid.hpp"

namespace otpp {

/// Who may read and write a table (ETS's public, protected, private).
enum class table_access {
  public_access,     ///< any thread or process reads and writes
  protected_access,  ///< the owner writes, anyone reads (the default)
  private_access,    ///< the owner alone reads and writes
};

/// How to make a table (ETS's options).
struct table_options {
  /// Found with table<...>::named(name) while the table lives; empty: unnamed.
  std::string name{};
  /// Who may read and write.
  table_access access = table_access::protected_access;
  /// Receives the table when the owner exits (with heir_data); empty: none.
  pid heir{};
  /// Handed to the heir in table_transfer::data.
  std::any heir_data{};
  /// Many threads read at once, and reads far outnumber writes (ETS's
  /// advice for the option). Readers count themselves on per-thread cache
  /// lines rather than on the shard's lock word, so concurrent reads scale;
  /// and after a millisecond or more without writes, lookup and member take
  /// no lock at all until the next write (Linux; see docs/semantics.md).
  /// Writes cost more: each checks every line, and the first after such a
  /// quiet spell waits for the reads in progress and makes every thread of
  /// the program pass a memory barrier (a system call, some 15 us here).
  /// With write_concurrency, it also splits a hash table into 64 lock
  /// shards rather than 8 (an ordered_set is one shard whatever they say).
  bool read_concurrency = false;
  /// See read_concurrency.
  bool write_concurrency = false;
  /// How the table counts its objects. On: each shard counts its own, so
  /// writers to different shards share no cache line, and size() sums the
  /// shards (a read lock each). Off: one counter for the table, which every
  /// insert and erase bumps, and size() reads at once. Unset: on with
  /// write_concurrency (ETS's default for its ordered_set; here for all).
  /// An ordered_set, one shard, counts in it either way: that count is
  /// the table's.
  std::optional<bool> decentralized_counters{};
};

}  // namespace otpp
