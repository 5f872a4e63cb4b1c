// The API types come from the generated schema: these checks fail `npm run typecheck` when an
// operation's documented answer, query or body stops being what the console expects.
import { describe, expectTypeOf, it } from 'vitest'
import type { Envelope } from '@/api/client'
import type { KeyListQuery } from '@/api/endpoints'
import type {
  BodyOf,
  ConfigOption,
  DataOf,
  ErrorCode,
  Failure,
  GroupInput,
  GroupResponse,
  InvalidField,
  KeyPage,
  KeyResponse,
  LogFilters,
  LogItem,
  LogPage,
  Pagination,
  Policy,
  PolicyInput,
  QueryOf,
  RuleTestResult,
  SampleAnswer,
  SettingsCategory,
} from '@/api/types'

describe('generated API types', () => {
  it('give each operation its documented data', () => {
    expectTypeOf<DataOf<'list_groups'>>().toEqualTypeOf<GroupResponse[]>()
    expectTypeOf<DataOf<'create_group'>>().toEqualTypeOf<GroupResponse>()
    expectTypeOf<DataOf<'list_config_options'>>().toEqualTypeOf<ConfigOption[]>()
    expectTypeOf<DataOf<'list_settings'>>().toEqualTypeOf<SettingsCategory[]>()
    expectTypeOf<DataOf<'list_channel_types'>>().toEqualTypeOf<string[]>()
    // A route answering only a message has no data.
    expectTypeOf<DataOf<'update_settings'>>().toEqualTypeOf<undefined>()
    expectTypeOf<DataOf<'delete_group'>>().toEqualTypeOf<undefined>()
  })

  it('give the policy routes their policies, dry run and attachments', () => {
    expectTypeOf<DataOf<'list_policies'>>().toEqualTypeOf<Policy[]>()
    expectTypeOf<DataOf<'update_policy'>>().toEqualTypeOf<Policy>()
    expectTypeOf<DataOf<'test_rules'>>().toEqualTypeOf<RuleTestResult>()
    expectTypeOf<DataOf<'delete_policy'>>().toEqualTypeOf<undefined>()
    expectTypeOf<BodyOf<'create_policy'>>().toEqualTypeOf<PolicyInput>()
    expectTypeOf<BodyOf<'test_rules'>['sample']>().toEqualTypeOf<SampleAnswer>()
    expectTypeOf<BodyOf<'set_group_policies'>['policies'][number]['policy_id']>().toEqualTypeOf<number>()
    expectTypeOf<Policy['group_ids']>().toEqualTypeOf<number[]>()
  })

  it('give the pages their items and pagination', () => {
    expectTypeOf<KeyPage['items'][number]>().toMatchTypeOf<KeyResponse>()
    expectTypeOf<KeyResponse>().toMatchTypeOf<KeyPage['items'][number]>()
    expectTypeOf<LogPage['items'][number]>().toMatchTypeOf<LogItem>()
    expectTypeOf<LogPage['pagination']>().toEqualTypeOf<Pagination>()
  })

  it('take queries and bodies from the document', () => {
    expectTypeOf<KeyListQuery['group_id']>().toEqualTypeOf<number>()
    expectTypeOf<LogFilters>().not.toHaveProperty('page')
    expectTypeOf<LogFilters['is_success']>().toEqualTypeOf<boolean | undefined>()
    expectTypeOf<QueryOf<'chart'>['groupId']>().toEqualTypeOf<number | undefined>()
    expectTypeOf<BodyOf<'create_group'>>().toEqualTypeOf<GroupInput>()
    expectTypeOf<BodyOf<'update_settings'>>().toEqualTypeOf<Record<string, unknown>>()
  })

  it('describe the failure envelope with its list of invalid fields', () => {
    expectTypeOf<Failure['code']>().toEqualTypeOf<ErrorCode>()
    expectTypeOf<Failure['errors']>().toEqualTypeOf<InvalidField[] | undefined>()
    expectTypeOf<InvalidField>().toEqualTypeOf<{ field: string; message: string }>()
    expectTypeOf<Envelope<number>>().toEqualTypeOf<{ message: string } & { data: number }>()
  })
})
