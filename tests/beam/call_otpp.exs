# An Elixir node talking to an otpp node's served "counter" (tests/node_test.cpp).
# Prints one "key value" line per check; the test reads them.
[node_s] = System.argv()
node = String.to_atom(node_s)
out = fn k, v -> IO.puts("#{k} #{inspect(v)}") end

out.("ping", Node.ping(node))
out.("add", GenServer.call({:counter, node}, {:add, 5}))
GenServer.cast({:counter, node}, {:add, 10})
out.("get", GenServer.call({:counter, node}, :get))
send({:counter, node}, {:hello, "world"})
out.("infos", GenServer.call({:counter, node}, :infos))

t = %{a: [1, 2.5, "bin", {:t, -1}], big: 123_456_789_012_345_678_901_234_567_890, neg: -5_000_000_000,
      pid: self(), ref: make_ref(), improper: [1 | 2], chars: 'abc', utf8: :"ünïcode", empty: {}}
out.("echo", GenServer.call({:counter, node}, {:echo, t}) == t)

# A pid handed out by the otpp side, reached by pid.
worker = GenServer.call({:counter, node}, :worker)
out.("worker_pid", is_pid(worker) and node(worker) == node)
out.("by_pid", GenServer.call(worker, {:add, 1}))

# A link from here to an otpp process: its crash reaches us as an EXIT.
Process.flag(:trap_exit, true)
Process.link(worker)
catch_exit = fn f -> try do f.() catch :exit, {reason, _} -> reason end end
catch_exit.(fn -> GenServer.call(worker, :crash, 3000) end)
receive do
  {:EXIT, ^worker, reason} -> out.("linked_exit", reason)
after 3000 -> out.("linked_exit", :none)
end

noproc = catch_exit.(fn -> GenServer.call({:nobody, node}, :x, 3000) end)
out.("noproc", noproc)

ref = Process.monitor({:counter, node})
crash = catch_exit.(fn -> GenServer.call({:counter, node}, :crash, 3000) end)
out.("crash", crash)
receive do
  {:DOWN, ^ref, :process, _, reason} -> out.("down", reason)
after 3000 -> out.("down", :none)
end
