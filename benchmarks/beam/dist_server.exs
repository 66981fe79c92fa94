# The counter the distribution benchmark calls on a BEAM node. Prints
# "ready <node>", then serves until its stdin closes.
defmodule Counter do
  use GenServer
  def init(n), do: {:ok, n}
  def handle_call(:inc, _from, n), do: {:reply, n + 1, n + 1}
  def handle_call({:echo, b}, _from, n), do: {:reply, b, n}
end

{:ok, _} = GenServer.start(Counter, 0, name: :counter)
IO.puts("ready #{node()}")
IO.read(:stdio, :line)
