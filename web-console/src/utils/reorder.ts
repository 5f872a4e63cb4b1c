/** The list with one entry moved from `from` to `to`. */
export function moveItem<T>(list: readonly T[], from: number, to: number): T[] {
  const copy = [...list]
  const [item] = copy.splice(from, 1)
  if (item !== undefined) copy.splice(to, 0, item)
  return copy
}

/** `PUT /api/groups/reorder` items: the list's order as sort values 1, 2, 3, … */
export function sortItems(list: readonly { id: number }[]): { id: number; sort: number }[] {
  return list.map((g, i) => ({ id: g.id, sort: i + 1 }))
}
