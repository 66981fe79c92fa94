# The Elixir side of examples/cluster: an application with a supervised
# SessionStore that the otpp node calls, and a client of the otpp node's
# rate limiter.
#
#   elixir --sname app --cookie otpp_cluster_demo examples/cluster/cluster.exs otpp_cluster@HOST
#
# Prints what the rate limiter decides, then "ready <node>", and serves the
# session store until its standard input closes (Ctrl-D).
[otpp_s] = System.argv()
otpp = String.to_atom(otpp_s)

defmodule SessionStore do
  use GenServer
  def start_link(_), do: GenServer.start_link(__MODULE__, %{}, name: :session_store)
  @impl true
  def init(sessions), do: {:ok, sessions}
  @impl true
  def handle_call({:put, id, data}, _from, s), do: {:reply, :ok, Map.put(s, id, data)}
  def handle_call({:get, id}, _from, s), do: {:reply, Map.fetch(s, id), s}
  def handle_call(:count, _from, s), do: {:reply, map_size(s), s}
end

{:ok, _} = Supervisor.start_link([SessionStore], strategy: :one_for_one)

if Node.connect(otpp) != true, do: raise("cannot reach #{otpp}: is it running, with this cookie?")

for i <- 1..7 do
  case GenServer.call({:rate_limiter, otpp}, {:check, "alice"}) do
    {:allowed, left} -> IO.puts("elixir: request #{i} for alice allowed, #{left} left")
    {:limited, retry_ms} -> IO.puts("elixir: request #{i} for alice limited, retry in #{retry_ms} ms")
  end
end

IO.puts("ready #{node()}")
IO.read(:stdio, :line)
