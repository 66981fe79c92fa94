# Elixir calling a counter served on another node (otpp or BEAM): the three
# dist_call figures, from compiled loops. Args: TARGET_NODE N PER_CALLER
[target_s, n_s, per_s] = System.argv()
target = {:counter, String.to_atom(target_s)}
n = String.to_integer(n_s)
per = String.to_integer(per_s)

defmodule DistClient do
  def loop(_t, _req, 0), do: :ok
  def loop(t, req, k), do: (GenServer.call(t, req); loop(t, req, k - 1))

  def timed(f) do
    t0 = System.monotonic_time(:nanosecond)
    f.()
    System.monotonic_time(:nanosecond) - t0
  end
end

true = Node.connect(elem(target, 1))
DistClient.loop(target, :inc, div(n, 10))
dt = DistClient.timed(fn -> DistClient.loop(target, :inc, n) end)
IO.puts("dist_call_ns #{round(dt / n)}")
blob = :binary.copy("x", 1024)
dt = DistClient.timed(fn -> DistClient.loop(target, {:echo, blob}, n) end)
IO.puts("dist_call_1k_ns #{round(dt / n)}")
parent = self()
pids = for _ <- 1..64, do: spawn(fn -> receive(do: (:go -> :ok)); DistClient.loop(target, :inc, per); send(parent, :done) end)
dt = DistClient.timed(fn ->
  Enum.each(pids, &send(&1, :go))
  for _ <- 1..64, do: receive(do: (:done -> :ok))
end)
IO.puts("dist_call_concurrent_64 #{round(64 * per / (dt / 1.0e9))}")
